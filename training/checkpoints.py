"""Per-epoch checkpoints of a training run that a resumed run can trust.

After every epoch :class:`EpochCheckpoint` writes the trainer's whole state (network, estimator
heads, optimizer, noise generators) to ``epoch-NNNN.weights.h5`` through a temporary file and a
rename, then a record ``epoch-NNNN.json`` (``{"epoch": N, "sha256": ...}``) the same way. A
checkpoint counts only when its record exists and the weights match the record's sha256, so a kill
at any point (while the weights are written, between the two files, while older ones are pruned)
leaves either the new checkpoint or the previous one, never a mix. The two newest are kept.

:func:`restore_checkpoint` loads the newest checkpoint that verifies and loads, and returns *its*
epoch: the data pipeline starts where the restored weights stopped, and a run whose last epoch is
already saved exports the restored weights, not fresh ones. Runs checkpointed by earlier versions
(Keras ``BackupAndRestore``: ``latest.weights.h5`` + ``training_metadata.json``, with ``.bkp``
copies) are read too, each weights file with its own metadata file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras

from training.files import write_json
from zoo.data import file_sha256
from zoo.errors import UserInputError

RECORD = re.compile(r"^epoch-(\d{4,})\.json$")
KEEP = 2
LEGACY = (("latest.weights.h5", "training_metadata.json"), ("latest.weights.h5.bkp", "training_metadata.json.bkp"))


def weights_file(ckpt: Path, epoch: int) -> Path:
    return ckpt / f"epoch-{epoch:04d}.weights.h5"


def record_file(ckpt: Path, epoch: int) -> Path:
    return ckpt / f"epoch-{epoch:04d}.json"


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the trainer (``self.model``) after every epoch into ``ckpt`` (see the module docstring).

    Place it after the callbacks that may reject an epoch (the divergence guard), so a rejected
    state is never saved."""

    def __init__(self, ckpt: str | os.PathLike):
        super().__init__()
        self.ckpt = Path(ckpt)

    def on_epoch_end(self, epoch, logs=None):
        n = epoch + 1
        self.ckpt.mkdir(parents=True, exist_ok=True)
        final = weights_file(self.ckpt, n)
        tmp = self.ckpt / f".tmp-{os.getpid()}-{final.name}"  # Keras wants the .weights.h5 suffix
        self.model.save_weights(str(tmp))
        os.replace(tmp, final)
        write_json(record_file(self.ckpt, n), {"epoch": n, "sha256": file_sha256(final)})
        for old in epochs_recorded(self.ckpt)[KEEP:]:  # newest first: keep the first KEEP
            record_file(self.ckpt, old).unlink(missing_ok=True)  # the record first: never a record without weights
            weights_file(self.ckpt, old).unlink(missing_ok=True)
        for name in ("latest.weights.h5", "latest.weights.h5.bkp"):  # an older version's copies are now stale
            (self.ckpt / name).unlink(missing_ok=True)


def epochs_recorded(ckpt: Path) -> list[int]:
    """Epochs with a record file in ``ckpt``, newest first (not yet verified)."""
    found = [int(m.group(1)) for p in ckpt.glob("epoch-*.json") if (m := RECORD.match(p.name))]
    return sorted(found, reverse=True)


def _candidates(ckpt: Path) -> list[tuple[int, Path, str | None]]:
    """``(epoch, weights file, expected sha256 or None)``, newest first; records that cannot be read are skipped."""
    out = []
    for n in epochs_recorded(ckpt):
        try:
            rec = json.loads(record_file(ckpt, n).read_text())
            out.append((int(rec["epoch"]), weights_file(ckpt, n), str(rec["sha256"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for weights, meta in LEGACY:
        try:
            out.append((int(json.loads((ckpt / meta).read_text())["epoch"]), ckpt / weights, None))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def completed_epochs(ckpt: Path) -> int:
    """The epoch of the newest checkpoint whose weights match its record (0 when none); nothing is loaded."""
    for epoch, weights, digest in _candidates(ckpt):
        if weights.is_file() and (digest is None or file_sha256(weights) == digest):
            return epoch
    return 0


def restore_checkpoint(trainer: keras.Model, ckpt: Path) -> int:
    """Load the newest checkpoint of ``ckpt`` that verifies and loads into ``trainer`` (built, with
    its optimizer built); returns its epoch. Raises :class:`UserInputError` when checkpoints exist
    but none can be used (one line, naming what was wrong with the newest)."""
    problems = []
    for epoch, weights, digest in _candidates(ckpt):
        if not weights.is_file():
            problems.append(f"{weights.name} is missing")
            continue
        if digest is not None and file_sha256(weights) != digest:
            problems.append(f"{weights.name} does not match its sha256")
            continue
        try:
            trainer.load_weights(str(weights))
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file fails in h5py or Keras
            problems.append(f"{weights.name} cannot be loaded ({type(e).__name__})")
            continue
        return epoch
    if problems:
        raise UserInputError(f"--resume: no usable checkpoint in {ckpt} ({'; '.join(problems)}); "
                             "start over with --overwrite")
    return 0


__all__ = ["EpochCheckpoint", "completed_epochs", "epochs_recorded", "restore_checkpoint"]
