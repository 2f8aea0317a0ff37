"""Export a trained model as a directory, and load it back.

Layout of ``<out>/`` (TF Serving's numbered-version layout for the SavedModel)::

    <out>/1/                 SavedModel with signatures ``serving_default`` and ``noisy_vote``
    <out>/model.keras        the Keras model (architecture, weights, noise state)
    <out>/metadata.json      architecture, data set, training recipe, seed, metrics, versions,
                             and the sha256 of every other file

Signatures (``N`` is the batch, ``S`` the example shape, ``C`` the number of classes):

=================  ==========================================  ===============================================
signature          inputs                                      outputs
=================  ==========================================  ===============================================
``serving_default`` ``images``: float32 ``[N, *S]`` in range  ``probabilities``: float32 ``[N, C]`` (softmax of
                                                               the noise-free logits); ``classes``: int64 ``[N]``
``noisy_vote``     ``images`` as above; ``stddev``: float32     ``vote_counts``: int32 ``[N, C]``;
                   scalar in [0, MAX_STDDEV]; ``votes``: int32  ``classes``: int64 ``[N]`` (majority class)
                   scalar in [1, VOTES_CAP]
=================  ==========================================  ===============================================

"In range" is the data set's value range: [0, 1] for pixels, [-1, 1] for stroke steps.
Inputs are validated inside the graph: values outside that range, a negative or huge stddev, or a
vote count outside its range give an ``InvalidArgument`` error, not a crash or a huge allocation.
The directory is written to a temporary sibling and renamed, so a failed export leaves nothing;
an existing export is replaced only once the new one is complete, and only if it is an export
(every file in it listed in its ``metadata.json``): a folder holding anything else is refused.
A temporary sibling left behind by a killed export is removed by the next export to the same name.

Integrity: :func:`verify_export` requires a non-empty ``files`` list, every listed file present
with its sha256, and every file of the export listed; it cannot be switched off by editing the
metadata.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from zoo.data import file_sha256
from zoo.errors import OutputExistsError, UserInputError
from zoo.files import write_text_atomic
from zoo.noise_context import noise_override
from zoo.voting import VOTES_CAP, vote_counts

MAX_STDDEV = 10.0
SAVEDMODEL_VERSION = "1"
METADATA = "metadata.json"
KERAS_FILE = "model.keras"


class ExportError(UserInputError):
    """A directory is not a glrzoo export, or its files do not match their recorded checksums."""


RUN_FOLDERS = ("checkpoints",)  # what a training run keeps in its --out before it exports


sha256 = file_sha256  # hex sha256 of a file, read in 1 MiB blocks (one implementation, in zoo.data)


def file_checksums(root: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``root`` except ``metadata.json``."""
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != METADATA}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_siblings(out: Path) -> list[Path]:
    """Temporary siblings (``.<name>.tmp-<pid>-*``, ``.<name>.old-<pid>-*``) of ``out`` whose writer is gone."""
    stale = []
    for kind in ("tmp", "old"):
        for p in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = p.name[len(f".{out.name}.{kind}-"):].split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
                stale.append(p)
    return stale


def clean_stale_siblings(out: str | os.PathLike) -> list[Path]:
    """Remove what a killed export to ``out`` left beside it; a complete old export whose swap was
    interrupted (``out`` missing) is put back. Returns the paths dealt with."""
    out = Path(out)
    done = []
    if not out.parent.is_dir():
        return done
    for p in _stale_siblings(out):
        if ".old-" in p.name and not out.exists() and (p / METADATA).is_file():
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


def output_kind(out: str | os.PathLike) -> str:
    """What ``out`` holds: ``missing``, ``empty``, ``export`` (every file in it listed in its metadata,
    besides the training run's ``checkpoints/``), ``run`` (only an unfinished run's ``checkpoints/``).

    Raises :class:`OutputExistsError` for a file, or a folder holding anything else (the user's data,
    never replaced)."""
    out = Path(out)
    here = Path.cwd().resolve()
    if out.exists() and (out.resolve() == here or out.resolve() in here.parents):
        raise OutputExistsError(f"--out {out} is the current folder or one above it, which an export replaces as a "
                                "whole; name a new folder inside it, e.g. --out ./model (nothing was changed)")
    if not out.exists():
        return "missing"
    if not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose another --out (nothing was changed)")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return "empty"
    if set(entries) <= set(RUN_FOLDERS):
        return "run"
    if METADATA in entries:
        try:
            listed = json.loads((out / METADATA).read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            listed = None
        if isinstance(listed, dict) and listed:
            tops = {rel.split("/", 1)[0] for rel in listed}
            others = sorted(set(entries) - tops - {METADATA, *RUN_FOLDERS})
            if not others:
                return "export"
            raise OutputExistsError(f"{out} holds files that are not part of its export ({', '.join(others[:5])}); "
                                    "move them away or choose another --out (nothing was changed)")
    raise OutputExistsError(f"{out} is not empty and is not a glrzoo export ({', '.join(entries[:5])}"
                            f"{', ...' if len(entries) > 5 else ''}); choose another --out (nothing was changed)")


def _validated_images(images, example_shape, value_range=(0.0, 1.0)):
    lo, hi = (float(v) for v in value_range)
    shape = tf.debugging.assert_equal(tf.shape(images)[1:], tf.constant(example_shape, tf.int32),
                                      message=f"images must have shape [N, {', '.join(map(str, example_shape))}]")
    checks = [shape, tf.debugging.assert_greater_equal(images, lo, message=f"images must be in [{lo:g}, {hi:g}]"),
              tf.debugging.assert_less_equal(images, hi, message=f"images must be in [{lo:g}, {hi:g}]")]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def build_export_archive(model: keras.Model, value_range=(0.0, 1.0)) -> keras.export.ExportArchive:
    """An ExportArchive serving ``model`` through the two documented signatures; inputs outside
    ``value_range`` (the data set's, e.g. ``(0, 1)`` for pixels) are refused in-graph."""
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="images")
    # No archive.track(model): the endpoints capture every variable they read, and tracking the
    # model as well stores each weight twice (the Keras wrappers and the tf.Variables they wrap;
    # keras-team/keras#23553), doubling the export on disk and in every server's memory.
    archive = keras.export.ExportArchive()

    def serving_default(images):
        images = _validated_images(images, model.input_shape[1:], value_range)
        with noise_override(0.0):
            logits = model(images, training=False)
        return {"probabilities": tf.nn.softmax(logits, -1), "classes": tf.argmax(logits, -1)}

    def noisy_vote(images, stddev, votes):
        images = _validated_images(images, model.input_shape[1:], value_range)
        checks = [tf.debugging.assert_greater_equal(stddev, 0.0, message="stddev must be >= 0"),
                  tf.debugging.assert_less_equal(stddev, MAX_STDDEV, message=f"stddev must be <= {MAX_STDDEV}"),
                  tf.debugging.assert_greater_equal(votes, 1, message="votes must be >= 1"),
                  tf.debugging.assert_less_equal(votes, VOTES_CAP, message=f"votes must be <= {VOTES_CAP}")]
        with tf.control_dependencies(checks):  # checked before any op uses them (a zero vote count divides)
            images, stddev, votes = tf.identity(images), tf.identity(stddev), tf.identity(votes)
        counts = vote_counts(model, images, votes, stddev)
        return {"vote_counts": counts, "classes": tf.argmax(counts, -1)}

    archive.add_endpoint("serving_default", serving_default, input_signature=[spec])
    archive.add_endpoint("noisy_vote", noisy_vote, input_signature=[
        spec, tf.TensorSpec([], tf.float32, name="stddev"), tf.TensorSpec([], tf.int32, name="votes")])
    return archive


def export_model(model: keras.Model, out_dir: str | os.PathLike, metadata: dict, overwrite: bool = False,
                 value_range=(0.0, 1.0)) -> Path:
    """Write ``model`` and ``metadata`` to ``out_dir`` atomically (temporary sibling, then rename).

    ``metadata`` is stored with ``files`` (sha256 of every file) and ``signatures`` added.
    ``value_range``: the interval serving inputs must lie in (the data set's), checked in-graph.
    Returns the final directory.
    """
    out = Path(out_dir)
    kind = output_kind(out)  # a file or a folder of other things: refused, even with overwrite
    if kind == "export" and not overwrite:
        raise OutputExistsError(f"{out} already holds an export; pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(out)
    tmp = make_folder_beside(out)
    try:
        model.save(tmp / KERAS_FILE)
        build_export_archive(model, value_range).write_out(str(tmp / SAVEDMODEL_VERSION), verbose=False)
        meta = dict(metadata)
        meta["signatures"] = {
            "serving_default": {"inputs": {"images": f"float32 [N, {', '.join(map(str, model.input_shape[1:]))}] "
                                                     f"in [{value_range[0]:g}, {value_range[1]:g}]"},
                                "outputs": {"probabilities": "float32 [N, C]", "classes": "int64 [N]"}},
            "noisy_vote": {"inputs": {"images": "as serving_default", "stddev": f"float32 [] in [0, {MAX_STDDEV}]",
                                      "votes": f"int32 [] in [1, {VOTES_CAP}]"},
                           "outputs": {"vote_counts": "int32 [N, C]", "classes": "int64 [N]"}},
        }
        meta["files"] = file_checksums(tmp)
        (tmp / METADATA).write_text(_dumps(meta))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _dumps(meta: dict) -> str:
    """Strict JSON (no NaN or Infinity, which are not JSON): a non-finite number is refused by name."""
    try:
        return json.dumps(meta, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError:
        bad = ", ".join(_nonfinite_paths(meta)) or "a value"
        raise UserInputError(f"metadata holds a non-finite number ({bad}); it is not valid JSON: "
                             "pass finite values") from None


def _nonfinite_paths(value, path="") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nonfinite_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _nonfinite_paths(v, f"{path}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}={value}"]
    return []


def make_folder_beside(out: Path) -> Path:
    """A new hidden temporary folder next to ``out`` (same file system, so it can be renamed into
    place), with the permissions of an ordinary folder (``0777`` less the umask, not ``mkdtemp``'s
    ``0700``), so a server running as another user (TF Serving) can read the export."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the complete ``tmp`` at ``out``; an existing ``out`` is moved aside first and removed only after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_metadata(export_dir: str | os.PathLike) -> dict:
    path = Path(export_dir) / METADATA
    if not path.is_file():
        raise ExportError(f"{export_dir} is not a glrzoo export (no {METADATA}); "
                          "pass a directory written by 'glrzoo train --out'")
    try:
        meta = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); re-export or re-download the model") \
            from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path} is not a JSON object; re-export or re-download the model")
    return meta


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def update_metadata(export_dir: str | os.PathLike, **fields) -> dict:
    """Add or replace top-level ``fields`` of an export's ``metadata.json`` (atomic rename).

    For facts learned after the export (a tuning record, an evaluation summary); the recorded
    checksums cover the other files, so they stay valid. Returns the new metadata.
    """
    path = Path(export_dir) / METADATA
    meta = {**read_metadata(export_dir), **fields}
    write_text_atomic(path, _dumps(meta))
    return meta


def verify_export(export_dir: str | os.PathLike) -> dict:
    """Check every file's sha256 against ``metadata.json``; returns the metadata or raises :class:`ExportError`.

    The ``files`` list must be a non-empty ``{path: sha256}`` that names ``model.keras`` and the
    SavedModel, and every file of the export (``metadata.json`` and a training run's
    ``checkpoints/`` aside) must be listed: removing or emptying the list, or adding a file, fails.
    """
    root = Path(export_dir)
    meta = read_metadata(root)
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportError(f"{root / METADATA} has no list of file checksums ('files' is "
                          f"{'missing' if files is None else 'empty or not a mapping'}), so the export cannot be "
                          "verified; re-export or re-download the model")
    for needed in (KERAS_FILE, f"{SAVEDMODEL_VERSION}/saved_model.pb"):
        if needed not in files:
            raise ExportError(f"{root / METADATA} lists no checksum for {needed}; re-export or re-download the model")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() and p.name != METADATA and p.relative_to(root).parts[0] not in RUN_FOLDERS}
    unlisted = sorted(present - set(files))
    if unlisted:
        raise ExportError(f"{root / unlisted[0]} is not listed in {METADATA} (added or altered export); "
                          "re-export or re-download the model")
    for rel, digest in files.items():
        path = root / rel
        if not isinstance(digest, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ExportError(f"{root / METADATA} has a malformed entry for {rel!r}; re-export or re-download the model")
        if not path.is_file():
            raise ExportError(f"{path} is missing from the export; re-export or re-download the model")
        if sha256(path) != digest:
            raise ExportError(f"{path} does not match its sha256 in {METADATA} (corrupted or altered); "
                              "re-export or re-download the model")
    return meta


def load_model(export_dir: str | os.PathLike, verify: bool = True) -> keras.Model:
    """Load the Keras model of an export (after checking checksums when ``verify``)."""
    root = Path(export_dir)
    if verify:
        verify_export(root)
    elif not (root / KERAS_FILE).is_file():
        raise ExportError(f"{root} is not a glrzoo export (no {KERAS_FILE})")
    from zoo.registry import MODELS
    MODELS.load()  # the model modules register the custom layers
    try:
        return keras.saving.load_model(root / KERAS_FILE, compile=False)
    except ValueError as e:
        if "safe_mode" not in str(e) and "Lambda" not in str(e):
            raise
        raise ExportError(f"{root / KERAS_FILE} holds Python code (a Lambda layer), which glrzoo does not run; "
                          "rebuild the model from registered layers and export it again") from None


def load_signatures(export_dir: str | os.PathLike) -> dict:
    """The SavedModel's signatures, as TF Serving sees them (``tf.saved_model.load(...).signatures``)."""
    return tf.saved_model.load(str(Path(export_dir) / SAVEDMODEL_VERSION)).signatures
