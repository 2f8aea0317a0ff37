"""Pretrained robust models: list, describe, load (checksums verified), from any install.

Each model is an export directory (see :mod:`zoo.export`) named by its path under a root, e.g.
``mnist/glr_threshold_ce``; a unique last part (``glr_threshold_ce``) also works.

Where a name is looked up, in order:

1. the local root: ``$GLRZOO_PRETRAINED_DIR`` if set, else the models installed with the package
   (the wheel carries ``saved_models/`` as ``zoo/saved_models/``), else the repository's ``saved_models/``;
2. the cache, :func:`cache_dir` (``$GLRZOO_CACHE``, else ``$XDG_CACHE_HOME/glrzoo``, else
   ``~/.cache/glrzoo``), laid out like ``saved_models/`` under ``models/``;
3. a download from ``$GLRZOO_PRETRAINED_URL``, a base URL laid out like ``saved_models/``
   (``<URL>/index.json``, ``<URL>/mnist/lenet_bang/metadata.json``, ...). Every file is fetched with
   ``keras.utils.get_file`` and checked against its sha256 in the index: the index installed with
   the package (:data:`INDEX`, ``saved_models/index.json``) for the models it lists, else the
   server's ``index.json``. The files go to a temporary folder beside the cache entry, which is put
   in place only when every file matched and the export verifies; a tampered or truncated download
   is refused and leaves nothing in the cache.

Every load checks every file's sha256 against the export's ``metadata.json`` (:func:`zoo.export.verify_export`).
``saved_models/index.json`` is generated (:func:`write_index`, ``glrzoo pretrained readme``) and a
test fails when it drifts from the files. ``glrzoo pretrained readme`` also regenerates
``README.md`` and the leaderboard (``LEADERBOARD.md``, ``leaderboard/model_info/``; :mod:`zoo.leaderboard`),
which the index leaves out: they are documents generated from the metadata, not files of a model.

Example:
    >>> import zoo
    >>> model = zoo.load_pretrained("mnist/glr_threshold_ce")   # refuses altered files
    >>> probs = model(images)                                   # images: [N, 28, 28, 1] in [0, 1]
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
import urllib.parse
from pathlib import Path, PurePosixPath

import keras

from zoo.export import (
    METADATA,
    RUN_FOLDERS,
    ExportError,
    clean_stale_siblings,
    load_model,
    make_folder_beside,
    read_metadata,
    sha256,
    verify_export,
)
from zoo.files import write_text_atomic

ROOT_ENV = "GLRZOO_PRETRAINED_DIR"
URL_ENV = "GLRZOO_PRETRAINED_URL"
CACHE_ENV = "GLRZOO_CACHE"
INDEX = "index.json"
INSTALLED_ROOT = Path(__file__).resolve().parent / "saved_models"  # in a wheel install
REPO_ROOT = Path(__file__).resolve().parents[1] / "saved_models"  # in a checkout
DOWNLOAD_TIMEOUT_S = 60


class DownloadError(ExportError):
    """A pretrained model could not be had: not installed or cached and no URL, offline, or a downloaded
    file failed its sha256. A :class:`zoo.errors.UserInputError` (one line; exit code 2 in the CLI)."""


def builtin_root() -> Path:
    """The models that came with this install: ``zoo/saved_models`` of a wheel, else the repository's."""
    return INSTALLED_ROOT if INSTALLED_ROOT.is_dir() else REPO_ROOT


def pretrained_root() -> Path:
    """The local pretrained folder: ``$GLRZOO_PRETRAINED_DIR``, else :func:`builtin_root`."""
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else builtin_root()


def cache_dir() -> Path:
    """``$GLRZOO_CACHE``, else ``$XDG_CACHE_HOME/glrzoo``, else ``~/.cache/glrzoo``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "glrzoo"


def models_cache() -> Path:
    """Where downloaded exports are kept: ``<cache_dir>/models/<name>/``."""
    return cache_dir() / "models"


def list_pretrained(root: str | os.PathLike | None = None) -> list[str]:
    """Names (paths under the root, ``/``-separated) of every export with a ``metadata.json``."""
    root = Path(root) if root is not None else pretrained_root()
    if not root.is_dir():
        raise ExportError(f"pretrained folder {root} does not exist; pass --root or set ${ROOT_ENV}")
    return _exports_under(root)


def _exports_under(root: Path) -> list[str]:
    found = (p.parent.relative_to(root) for p in root.glob(f"**/{METADATA}"))
    return sorted(rel.as_posix() for rel in found
                  if rel.parts and "checkpoints" not in rel.parts and not any(x.startswith(".") for x in rel.parts))


NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")  # one part of a model name: no "..", no "/", no "~"


def check_name(name, where: str = "the command line") -> str:
    """``name`` if it is a safe model name: relative, ``/``-separated parts of letters, digits and
    ``._+-`` (not starting with a dot), so it can only name a folder inside its root; else
    :class:`DownloadError` naming where it came from. Every name from outside (the command line, a
    server's index, an export's file list) is checked here before any file is touched."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or not all(NAME_PART.match(part) for part in parts):
        raise DownloadError(f"refused the model name {name!r} from {where}: a name is a relative path like "
                            "'mnist/cnn6_bp' (letters, digits, '._+-'; no '..', no absolute path); nothing was touched")
    return name


def inside(root: Path, name: str, where: str = "the command line") -> Path:
    """``root / name`` after :func:`check_name`, refused unless it resolves inside ``root`` (symbolic links too)."""
    path = root.joinpath(*check_name(name, where).split("/"))
    if not path.resolve().is_relative_to(root.resolve()):
        raise DownloadError(f"refused the model name {name!r} from {where}: it leads outside {root}; nothing was touched")
    return path


def _match(name: str, names) -> str | None:
    """``name`` itself or the one name whose last part it is; ``None`` if none; ambiguity is an error."""
    names = list(names)
    if name in names:
        return name
    matches = sorted({n for n in names if n.rsplit("/", 1)[-1] == name})
    if len(matches) > 1:
        raise ExportError(f"pretrained name {name!r} is ambiguous ({', '.join(matches)}); use the full name")
    return matches[0] if matches else None


def resolve(name: str, root: str | os.PathLike | None = None) -> Path:
    """The export directory of ``name`` (full name or unique last part); clear error otherwise.

    With ``root``, only that folder is searched. Without, the local root, then the cache, then
    ``$GLRZOO_PRETRAINED_URL`` (downloaded into the cache), as the module docstring says.
    """
    if root is not None:
        root = Path(root)
        found = _match(name, list_pretrained(root))
        if found is None:
            raise ExportError(f"no pretrained model {name!r} in {root}; 'glrzoo pretrained list' shows the names")
        return root / found
    local = pretrained_root()
    if local.is_dir():
        found = _match(name, _exports_under(local))
        if found is not None:
            return local / found
    return fetch(name, _not_here=local)


def is_model_name(text: str) -> bool:
    """Whether ``text`` has the form of a model name (``mnist/cnn6_bp``; see :func:`check_name`)."""
    return isinstance(text, str) and all(NAME_PART.match(part) for part in text.split("/"))


def model_path(spec: str | os.PathLike, log=None, verify: bool = True) -> Path:
    """The export a command or function was given: a folder holding an export, else a pretrained
    name (``mnist/cnn6_bp``: the local root, the cache, then a download), verified by every file's
    sha256 before it is returned (``verify=False``: by a caller that loads it with
    :func:`zoo.export.load_model`, which verifies). A folder wins when both exist; ``log`` (e.g.
    ``print``) is told which was used when it was a name or when both existed."""
    path = Path(spec)
    text = str(spec)
    is_name = is_model_name(text)
    if path.is_dir():
        root = pretrained_root()
        if log is not None and is_name and root.is_dir() and text in _exports_under(root):
            log(f"{text}: using the folder {path.resolve()}, not the pretrained model of the same name")
        if verify:
            verify_export(path)
        return path
    if not is_name:
        raise ExportError(f"no folder {text} (and it is not a pretrained model name); check the path "
                          "('glrzoo pretrained list' shows the names)")
    try:
        found = resolve(text)
    except ExportError as e:
        raise type(e)(f"{text} is not a folder, and as a pretrained name: {e}") from None
    if verify:
        verify_export(found)
    if log is not None:
        log(f"{text}: pretrained model at {found}")
    return found


def describe(name: str, root: str | os.PathLike | None = None) -> dict:
    """The metadata of ``name`` (training recipe, command, metrics, evaluation summary, files)."""
    return read_metadata(resolve(name, root))


def load_pretrained(name: str, root: str | os.PathLike | None = None) -> keras.Model:
    """Load pretrained model ``name`` after checking every file's sha256 against its metadata.

    Looks in ``root`` if given, else in the local root, the cache and ``$GLRZOO_PRETRAINED_URL``.
    Raises :class:`zoo.export.ExportError` naming the file when one does not match, and
    :class:`DownloadError` (one line naming the cache and the URL) when it cannot be had.
    """
    path = resolve(name, root)
    verify_export(path)
    return load_model(path, verify=False)


# ---------------------------------------------------------------- index: sha256 of every file of every model

def build_index(root: str | os.PathLike | None = None) -> dict:
    """``{"schema": 1, "models": {name: {"files": {relative path: sha256}, "bytes": total}}}`` of the
    exports under ``root`` (default :func:`pretrained_root`; each verified first); ``metadata.json`` is
    listed with the other files."""
    root = Path(root) if root is not None else pretrained_root()
    models = {}
    for name in list_pretrained(root):
        export = root / name
        verify_export(export)
        rels = sorted(p.relative_to(export).as_posix() for p in export.rglob("*")
                      if p.is_file() and p.relative_to(export).parts[0] not in RUN_FOLDERS)
        models[name] = {"files": {rel: sha256(export / rel) for rel in rels},
                        "bytes": sum((export / rel).stat().st_size for rel in rels)}
    return {"schema": 1, "models": models}


def index_text(index: dict) -> str:
    return json.dumps(index, indent=1, sort_keys=True) + "\n"


def write_index(root: str | os.PathLike | None = None) -> Path:
    """Regenerate ``<root>/index.json`` (:func:`build_index`) atomically."""
    root = Path(root) if root is not None else pretrained_root()
    return write_text_atomic(root / INDEX, index_text(build_index(root)))


def read_index(path: str | os.PathLike) -> dict:
    """The ``models`` mapping of an index file, checked for shape; :class:`DownloadError` otherwise."""
    try:
        index = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DownloadError(f"{path} is not a readable pretrained index ({type(e).__name__}); "
                            f"check ${URL_ENV} or regenerate it with 'glrzoo pretrained index'") from None
    models = index.get("models") if isinstance(index, dict) else None
    if not isinstance(models, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("files"), dict) and METADATA in m["files"] for m in models.values()):
        raise DownloadError(f"{path} is not a pretrained index (no models with their files' sha256); "
                            f"check ${URL_ENV} or regenerate it with 'glrzoo pretrained index'")
    for name in models:
        check_name(name, f"the index {path}")
    return models


def installed_index() -> dict:
    """The models the installed index lists (``{}`` when this install has no index)."""
    path = builtin_root() / INDEX
    return read_index(path) if path.is_file() else {}


# ---------------------------------------------------------------- cache and download

def fetch(name: str, url: str | None = None, *, _not_here: Path | None = None) -> Path:
    """The cached export of ``name``, downloaded from ``url`` (default ``$GLRZOO_PRETRAINED_URL``)
    first when the cache has no valid copy. Returns its directory under :func:`models_cache`."""
    cache = models_cache()
    check_name(name)
    url = (url if url is not None else os.environ.get(URL_ENV, "")).strip().rstrip("/")
    index = installed_index()
    cached = _exports_under(cache) if cache.is_dir() else []
    full = _match(name, cached) or _match(name, index)
    where = f"{_not_here} or " if _not_here is not None else ""
    if full is not None and full in cached:
        try:
            verify_export(inside(cache, full))
            return cache / full
        except ExportError as e:
            if not url:
                raise ExportError(f"{e}; or delete {cache / full} and set ${URL_ENV} to download it again") from None
    if not url:
        raise DownloadError(f"no pretrained model {name!r} in {where}the cache {cache}, and ${URL_ENV} is not set; "
                            f"set it to a base URL laid out like saved_models/ to download the model there "
                            "('glrzoo pretrained list' shows the installed ones)")
    if full is None or full not in index:
        remote = _remote_index(name, url, cache)
        full = _match(name, remote)
        if full is None:
            raise DownloadError(f"no pretrained model {name!r} in {where}the cache {cache} or the index at "
                                f"{url}/{INDEX}; check the name ('glrzoo pretrained list') or ${URL_ENV}")
        entry = remote[full]
    else:
        entry = index[full]
    return _download(full, url, entry["files"], cache)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """A finite timeout for the downloads (``keras.utils.get_file`` sets none), unless one is set."""
    if socket.getdefaulttimeout() is not None:
        yield
        return
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(None)


def _get(origin: str, target: Path, digest: str | None) -> Path:
    """``keras.utils.get_file`` of ``origin`` to ``target`` (sha256 ``digest`` checked), quietly: its
    progress bar and messages are dropped, so a failure is the one line of the error raised."""
    target.parent.mkdir(parents=True, exist_ok=True)  # get_file falls back to /tmp/.keras for a missing folder
    with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(io.StringIO()):
        return Path(keras.utils.get_file(fname=target.name, origin=origin, file_hash=digest, hash_algorithm="sha256",
                                         cache_dir=str(target.parent), cache_subdir=""))


def _unreachable(name: str, origin: str, cache: Path, error: BaseException) -> DownloadError:
    reason = (str(error).splitlines() or [type(error).__name__])[0]
    return DownloadError(f"cannot download pretrained model {name!r}: {origin} failed ({reason}), and the cache "
                         f"{cache} has no copy; connect to the network or fix ${URL_ENV} (nothing was cached)")


def _remote_index(name: str, url: str, cache: Path) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".index.tmp-{os.getpid()}-", dir=cache))
    try:
        try:
            path = _get(f"{url}/{INDEX}", tmp / INDEX, None)
        except Exception as e:  # noqa: BLE001 - any failure of the fetch (offline, 404, bad URL)
            raise _unreachable(name, f"{url}/{INDEX}", cache, e) from None
        return read_index(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(name: str, url: str, files: dict, cache: Path) -> Path:
    """Fetch every file of export ``name`` into a temporary sibling of ``<cache>/<name>``, check each
    sha256 and the export, then move it in place. On any failure nothing is left in the cache."""
    dest = inside(cache, name, f"the index at {url}")
    for rel in files:
        check_name(rel, f"the index entry of {name!r} at {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(dest)
    tmp = make_folder_beside(dest)
    try:
        for rel, digest in sorted(files.items()):
            parts = PurePosixPath(rel).parts
            if not isinstance(digest, str) or PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
                raise DownloadError(f"the index entry of {name!r} has a malformed file {rel!r}; check ${URL_ENV}")
            origin = f"{url}/{urllib.parse.quote(name)}/{urllib.parse.quote(rel)}"
            try:
                _get(origin, tmp.joinpath(*parts), digest)
            except ValueError as e:
                if "hash" not in str(e):
                    raise
                raise DownloadError(f"{origin} does not match its sha256 in the index (tampered or truncated "
                                    f"download); refused, nothing was cached in {cache}; try again or check "
                                    f"${URL_ENV}") from None
            except Exception as e:  # noqa: BLE001 - offline, HTTP error, connection cut
                raise _unreachable(name, origin, cache, e) from None
        try:
            verify_export(tmp)
        except ExportError as e:
            raise DownloadError(f"the download of {name!r} from {url} is not a valid export "
                                f"({str(e).replace(str(tmp), str(dest))}); nothing was cached") from None
        if dest.exists():  # an invalid old copy (a valid one is returned before any download)
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
