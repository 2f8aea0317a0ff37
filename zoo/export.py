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
                   scalar in [1, MAX_VOTES]
=================  ==========================================  ===============================================

"In range" is the data set's value range: [0, 1] for pixels, [-1, 1] for stroke steps.
Inputs are validated inside the graph: values outside that range, a negative or huge stddev, or a
vote count outside its range give an ``InvalidArgument`` error, not a crash or a huge allocation.
The directory is written to a temporary sibling and renamed, so a failed export leaves nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from zoo.errors import OutputExistsError, UserInputError
from zoo.noise_context import noise_override
from zoo.voting import vote_counts

MAX_VOTES = 100
MAX_STDDEV = 10.0
SAVEDMODEL_VERSION = "1"
METADATA = "metadata.json"
KERAS_FILE = "model.keras"


class ExportError(UserInputError):
    """A directory is not a glrzoo export, or its files do not match their recorded checksums."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_checksums(root: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``root`` except ``metadata.json``."""
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != METADATA}


def _validated_images(images, example_shape, value_range=(0.0, 1.0)):
    lo, hi = (float(v) for v in value_range)
    tf.debugging.assert_equal(tf.shape(images)[1:], tf.constant(example_shape, tf.int32),
                              message=f"images must have shape [N, {', '.join(map(str, example_shape))}]")
    tf.debugging.assert_greater_equal(images, lo, message=f"images must be in [{lo:g}, {hi:g}]")
    tf.debugging.assert_less_equal(images, hi, message=f"images must be in [{lo:g}, {hi:g}]")
    return images


def build_export_archive(model: keras.Model, value_range=(0.0, 1.0)) -> keras.export.ExportArchive:
    """An ExportArchive tracking ``model`` with the two documented signatures; inputs outside
    ``value_range`` (the data set's, e.g. ``(0, 1)`` for pixels) are refused in-graph."""
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serving_default(images):
        images = _validated_images(images, model.input_shape[1:], value_range)
        with noise_override(0.0):
            logits = model(images, training=False)
        return {"probabilities": tf.nn.softmax(logits, -1), "classes": tf.argmax(logits, -1)}

    def noisy_vote(images, stddev, votes):
        images = _validated_images(images, model.input_shape[1:], value_range)
        tf.debugging.assert_greater_equal(stddev, 0.0, message="stddev must be >= 0")
        tf.debugging.assert_less_equal(stddev, MAX_STDDEV, message=f"stddev must be <= {MAX_STDDEV}")
        tf.debugging.assert_greater_equal(votes, 1, message="votes must be >= 1")
        tf.debugging.assert_less_equal(votes, MAX_VOTES, message=f"votes must be <= {MAX_VOTES}")
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
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save(tmp / KERAS_FILE)
        build_export_archive(model, value_range).write_out(str(tmp / SAVEDMODEL_VERSION), verbose=False)
        meta = dict(metadata)
        meta["signatures"] = {
            "serving_default": {"inputs": {"images": f"float32 [N, {', '.join(map(str, model.input_shape[1:]))}] "
                                                     f"in [{value_range[0]:g}, {value_range[1]:g}]"},
                                "outputs": {"probabilities": "float32 [N, C]", "classes": "int64 [N]"}},
            "noisy_vote": {"inputs": {"images": "as serving_default", "stddev": f"float32 [] in [0, {MAX_STDDEV}]",
                                      "votes": f"int32 [] in [1, {MAX_VOTES}]"},
                           "outputs": {"vote_counts": "int32 [N, C]", "classes": "int64 [N]"}},
        }
        meta["files"] = file_checksums(tmp)
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_metadata(export_dir: str | os.PathLike) -> dict:
    path = Path(export_dir) / METADATA
    if not path.is_file():
        raise ExportError(f"{export_dir} is not a glrzoo export (no {METADATA}); "
                          "pass a directory written by 'glrzoo train --out'")
    return json.loads(path.read_text())


def update_metadata(export_dir: str | os.PathLike, **fields) -> dict:
    """Add or replace top-level ``fields`` of an export's ``metadata.json`` (atomic rename).

    For facts learned after the export (a tuning record, an evaluation summary); the recorded
    checksums cover the other files, so they stay valid. Returns the new metadata.
    """
    path = Path(export_dir) / METADATA
    meta = {**read_metadata(export_dir), **fields}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return meta


def verify_export(export_dir: str | os.PathLike) -> dict:
    """Check every file's sha256 against ``metadata.json``; returns the metadata or raises :class:`ExportError`."""
    root = Path(export_dir)
    meta = read_metadata(root)
    for rel, digest in meta.get("files", {}).items():
        path = root / rel
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
    import zoo.models  # noqa: F401  (registers the custom layers)
    return keras.saving.load_model(root / KERAS_FILE, compile=False)


def load_signatures(export_dir: str | os.PathLike) -> dict:
    """The SavedModel's signatures, as TF Serving sees them (``tf.saved_model.load(...).signatures``)."""
    return tf.saved_model.load(str(Path(export_dir) / SAVEDMODEL_VERSION)).signatures
