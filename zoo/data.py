"""Data sets as numpy arrays, pixels in [0, 1], read from local files first.

=================  ==============================  =======================================================
name               shape of one example            where from
=================  ==============================  =======================================================
``digits``         ``(8, 8, 1)``                   scikit-learn's bundled 1,797 digits (always available)
``mnist``          ``(28, 28, 1)``                 IDX files in ``<data_dir>/mnist``, else tfds
``fashion_mnist``  ``(28, 28, 1)``                 IDX files in ``<data_dir>/fashion-mnist`` or Debian's
                                                   ``/usr/share/datasets/fashion-mnist``, else tfds
``mnist_strokes``  ``(117, 4)`` steps              ``<data_dir>/mnist-stroke-sequences/numpy-encoded``
``cifar10``        ``(32, 32, 3)``                 tensorflow-datasets only
=================  ==============================  =======================================================

``data_dir`` is the ``data_dir`` argument, else the ``GLRZOO_DATA_DIR`` environment variable.
tensorflow-datasets is tried with ``download=False`` (data already prepared in its cache); it
downloads only when ``download=True`` (CLI ``--download``) or ``GLRZOO_ALLOW_DOWNLOAD=1``, so
nothing is fetched silently (offline, tfds retries for minutes before failing).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from zoo.errors import UserInputError

DATASETS = ("digits", "mnist", "fashion_mnist", "mnist_strokes", "cifar10")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_SUBDIRS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "mnist_strokes": "mnist-stroke-sequences"}
_IDX = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


class DataNotFoundError(UserInputError, FileNotFoundError):
    """A data set is not available locally; the message says where we looked and how to fix it."""


@dataclasses.dataclass
class Dataset:
    """Train and test arrays of one data set.

    Attributes:
        x_train, x_test: float32, pixels (or stroke steps) as described in the module table.
        y_train, y_test: int32 class labels in ``[0, num_classes)``.
        name, num_classes: what it is.
        source: how it was read, with no path of this machine in it (``"IDX files"``,
            ``"stroke archives"``, ``"sklearn.datasets.load_digits"``, ``"tensorflow-datasets"``):
            this goes into an export's metadata.
        value_range: ``(low, high)`` every input value lies in: ``(0, 1)`` for pixels,
            ``(-1, 1)`` for stroke steps. Exports validate serving inputs against it.
        files: ``{file name: sha256}`` of the local files read (empty for the bundled digits and
            for tensorflow-datasets); recorded in the metadata beside the name.
        location: the folder the files were read from on this machine (``None`` if none); not recorded.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str
    value_range: tuple = (0.0, 1.0)
    files: dict = dataclasses.field(default_factory=dict)
    location: str | None = None

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def subset(self, train: int | None = None, test: int | None = None) -> "Dataset":
        """The first ``train`` / ``test`` examples (``None`` keeps all)."""
        return dataclasses.replace(self, x_train=self.x_train[:train], y_train=self.y_train[:train],
                                   x_test=self.x_test[:test], y_test=self.y_test[:test])


def default_data_dir() -> Path | None:
    value = os.environ.get("GLRZOO_DATA_DIR")
    return Path(value) if value else None


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool | None = None) -> Dataset:
    """Load data set ``name`` (see the module table). Raises :class:`DataNotFoundError` if absent."""
    if name not in DATASETS:
        raise UserInputError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)} ('glrzoo datasets' lists them)")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if download is None:
        download = os.environ.get("GLRZOO_ALLOW_DOWNLOAD", "") == "1"
    if name == "digits":
        return load_digits()
    looked = []
    for path in _local_candidates(name, data_dir):
        looked.append(str(path))
        if name == "mnist_strokes":
            if (path / "numpy-encoded" / "test-labels.tar.gz").exists():
                return load_strokes(path)
        elif (path / (_IDX["test_labels"] + ".gz")).exists() or (path / _IDX["test_labels"]).exists():
            return load_idx(path, name)
    if name != "mnist_strokes":
        ds = _load_tfds(name, download)
        if ds is not None:
            return ds
        looked.append("tensorflow-datasets cache" + (" and download" if download else " (download not allowed)"))
    hint = {"mnist_strokes": "set GLRZOO_DATA_DIR (or --data-dir) to a folder holding mnist-stroke-sequences/",
            "cifar10": "run once on a connected machine with --download (or GLRZOO_ALLOW_DOWNLOAD=1)"}.get(
        name, f"set GLRZOO_DATA_DIR (or --data-dir) to a folder holding {_SUBDIRS.get(name, name)}/ with the IDX "
              "files, or pass --download on a connected machine")
    raise DataNotFoundError(f"data set {name!r} not found (looked in: {'; '.join(looked) or 'nowhere'}); fix: {hint}")


def _local_candidates(name: str, data_dir: Path | None) -> list[Path]:
    out = []
    if name not in _SUBDIRS:
        return out
    if data_dir is not None:
        sub = _SUBDIRS.get(name)
        if sub:
            out.append(data_dir / sub)
        out.append(data_dir)
    if name == "fashion_mnist":
        out.append(DEBIAN_FASHION)
    return out


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16 scaled to [0, 1]), stratified split with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10, "sklearn.datasets.load_digits")


class DataFileError(UserInputError):
    """A data file is truncated, corrupted or not in the expected format; the message names it."""


def _broken(path: Path, why: str) -> DataFileError:
    return DataFileError(f"{path} is {why}; delete it and download it again (or point --data-dir elsewhere)")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} is missing (the other IDX files are there); download it again") from None
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise _broken(path, f"truncated or corrupted ({type(e).__name__}: {e})") from None
    if len(raw) < 8:
        raise _broken(path, f"truncated ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise _broken(path, f"not an IDX file of unsigned bytes (magic {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise _broken(path, f"truncated or corrupted ({len(raw)} bytes where its header promises {expected})")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _check_split(folder, name: str, images: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> None:
    if len(images) != len(labels):
        raise DataFileError(f"{folder}: the {name} split has {len(images)} examples but {len(labels)} labels; "
                            "one of its files is truncated or from another data set: download them again")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFileError(f"{folder}: the {name} labels are outside 0..{num_classes - 1}; download them again")
    if not np.issubdtype(labels.dtype, np.integer) and len(labels) and not np.all(labels == np.round(labels)):
        raise DataFileError(f"{folder}: the {name} labels are not whole numbers; download them again")
    if np.issubdtype(images.dtype, np.floating) and not np.all(np.isfinite(images)):
        bad = int(np.sum(~np.all(np.isfinite(images.reshape(len(images), -1)), axis=1)))
        raise DataFileError(f"{folder}: {bad} {name} examples hold NaN or infinite values; download the data again")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_idx(folder: str | os.PathLike, name: str = "mnist") -> Dataset:
    """Read the four standard IDX files (gzipped or not) from ``folder``."""
    folder = Path(folder)
    arrays, files = {}, {}
    for key, stem in _IDX.items():
        path = folder / (stem + ".gz")
        path = path if path.exists() else folder / stem
        arrays[key] = _read_idx(path)
        files[path.name] = file_sha256(path)
    _check_split(folder, "train", arrays["train_images"], arrays["train_labels"])
    _check_split(folder, "test", arrays["test_images"], arrays["test_labels"])
    scale = lambda a: (a.astype(np.float32) / 255.0)[..., None]  # noqa: E731
    return Dataset(name, scale(arrays["train_images"]), arrays["train_labels"].astype(np.int32),
                   scale(arrays["test_images"]), arrays["test_labels"].astype(np.int32), 10, "IDX files",
                   files=files, location=str(folder))


def _read_npy_tar(path: Path) -> np.ndarray:
    try:
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(".npy")), None)
            if member is None:
                raise _broken(path, "an archive without a .npy file")
            return np.load(io.BytesIO(tar.extractfile(member).read()))
    except DataFileError:
        raise
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} is missing; download the stroke data set again") from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise _broken(path, f"truncated or corrupted ({type(e).__name__}: {e})") from None


def load_strokes(folder: str | os.PathLike, scale: float = 1.0 / 28.0) -> Dataset:
    """MNIST pen-stroke sequences: ``[N, 117, 4]`` steps ``[dx, dy, eos, eod]``, zero-padded in front.

    ``dx, dy`` (integers in -18..28; the first step is the absolute start point) are multiplied
    by ``scale`` so that the inputs are of order 1; ``eos`` and ``eod`` stay 0/1.
    """
    folder = Path(folder) / "numpy-encoded"
    out, files = {}, {}
    for split in ("train", "test"):
        seq = _read_npy_tar(folder / f"{split}-padded-leading.tar.gz")
        if seq.ndim != 3 or seq.shape[-1] != 4 or not np.issubdtype(seq.dtype, np.number):
            raise _broken(folder / f"{split}-padded-leading.tar.gz",
                          f"not stroke sequences (an array of {seq.dtype} {seq.shape}, expected [N, steps, 4])")
        seq = seq.astype(np.float32)
        seq[..., :2] *= scale
        labels = _read_npy_tar(folder / f"{split}-labels.tar.gz")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number):
            raise _broken(folder / f"{split}-labels.tar.gz", f"not labels (an array of {labels.dtype} {labels.shape})")
        _check_split(folder, split, seq, labels)
        labels = labels.astype(np.int32)
        out[split] = (seq, labels)
        for stem in ("padded-leading", "labels"):
            files[f"{split}-{stem}.tar.gz"] = file_sha256(folder / f"{split}-{stem}.tar.gz")
    return Dataset("mnist_strokes", *out["train"], *out["test"], 10, "stroke archives (numpy-encoded)",
                   value_range=(-1.0, 1.0), files=dict(sorted(files.items())), location=str(folder))


def _load_tfds(name: str, download: bool) -> Dataset | None:
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - tfds is a declared dependency
        return None
    try:
        splits = tfds.load(name, split=["train", "test"], as_supervised=True, batch_size=-1,
                           download=download, try_gcs=False)
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return None
    (xtr, ytr), (xte, yte) = [tfds.as_numpy(s) for s in splits]
    scale = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return Dataset(name, scale(xtr), ytr.astype(np.int32), scale(xte), yte.astype(np.int32), 10, "tensorflow-datasets")


def as_sequences(images: np.ndarray) -> np.ndarray:
    """Image batch ``[N, H, W, C]`` to sequences ``[N, H, W * C]`` (rows as time steps)."""
    return images.reshape(images.shape[0], images.shape[1], -1)


def available() -> list[dict]:
    """One row per data set: name, whether it loads here without downloading, and from where."""
    rows = []
    for name in DATASETS:
        try:
            if name == "digits":
                where = "sklearn.datasets.load_digits (bundled)"
            else:
                data_dir = default_data_dir()
                marker = "numpy-encoded/test-labels.tar.gz" if name == "mnist_strokes" else _IDX["test_labels"] + ".gz"
                where = next((str(p) for p in _local_candidates(name, data_dir)
                              if (p / marker).exists() or (p / marker.removesuffix(".gz")).exists()), None)
                if where is None:
                    raise DataNotFoundError("no local files")
            rows.append({"name": name, "available": True, "source": where})
        except (DataNotFoundError, OSError):
            rows.append({"name": name, "available": False,
                         "source": "tensorflow-datasets (needs --download on a connected machine)"})
    return rows
