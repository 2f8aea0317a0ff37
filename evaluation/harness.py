"""Evaluate exported models: clean, white-box, transfer, gradient-free, corruptions, noisy voting.

:func:`evaluate` returns (and writes to ``report.json``) a list of rows. Every row has ``model``,
``suite``, ``attack`` or ``corruption``, its settings, ``n``, ``accuracy`` with a 95% Wilson
interval, and for attacks the success rate and the mean L2 / L-inf size of successful
perturbations. Rows are keyed, and each carries ``settings_hash`` (every setting, the test points
and the checksums of every model) and ``digest`` (of the row itself): a rerun with the same output
directory skips a finished row only when both match, so an interrupted run resumes, a changed
setting recomputes, and a stale or hand-edited row is dropped, never published. Work is shared:
adversarial examples are made once per source model and reused for every target, corrupted images
once per corruption and severity, and iterative attacks run only on the points still classified
correctly (as AutoAttack does).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from evaluation.masking import MASKING_TOLERANCE, masking_flags  # noqa: F401  (re-exported)
from evaluation.suites import Suite, SuiteContext, plan
from zoo.errors import OutputExistsError, UserInputError
from zoo.export import MAX_STDDEV, load_model, read_metadata, verify_export
from zoo.files import write_json
from zoo.noise import set_noise
from zoo.pretrained import model_path

SCHEMA_VERSION = 3  # 3: settings recorded per owner (shared, each suite, each attack)


class Evaluation:
    """Holds the report rows, their keys and the counters; saves after every row (atomic rename)."""

    def __init__(self, out: Path | None, log: Callable[[str], None] = print, fingerprint: str = "",
                 models: Sequence[str] = ()):
        self.out = out
        self.log = log
        self.fingerprint = fingerprint
        self.rows: list[dict] = []
        self.counters = {"attack_runs": 0, "model_passes": 0}
        self.started = time.perf_counter()
        if out is not None and (out / "report.json").exists():
            rows = read_rows(out / "report.json")
            theirs = sorted({str(r.get("model")) for r in rows})
            if rows and models and not set(theirs) & set(models):
                raise OutputExistsError(f"{out} holds the report of other models ({', '.join(theirs[:4])}); choose "
                                        "another --out, or move that report away to replace it (nothing was changed)")
            self.rows = [r for r in rows if r.get("settings_hash") == fingerprint and r.get("digest") == row_digest(r)]
            if len(self.rows) < len(rows):
                log(f"  {len(rows) - len(self.rows)} of {len(rows)} rows in {out / 'report.json'} were made with other "
                    "settings or edited by hand: dropped, recomputing")

    def done(self, key: str) -> dict | None:
        return next((r for r in self.rows if r["key"] == key), None)

    def add(self, row: dict) -> dict:
        row["settings_hash"] = self.fingerprint
        row["digest"] = row_digest(row)
        self.rows.append(row)
        what = row.get("attack") or row.get("corruption") or ""
        self.log(f"  [{len(self.rows):>4} rows, {time.perf_counter() - self.started:6.0f} s] {row['model']:<24} "
                 f"{row['suite']:<10} {what:<16} {_settings(row):<40} acc {100 * row['accuracy']:.2f}%")
        self.save()
        return row

    def save(self) -> None:
        if self.out is None:
            return
        write_json(self.out / "report.json", {"schema_version": SCHEMA_VERSION, "counters": self.counters,
                                              "rows": self.rows}, indent=1, default=float)


def row_digest(row: dict) -> str:
    """sha256 of a row without its ``digest`` (canonical JSON), so a hand-edited row is recognised."""
    body = {k: v for k, v in row.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=float).encode()).hexdigest()


def read_rows(path: Path) -> list[dict]:
    """The rows of an existing ``report.json``; :class:`UserInputError` naming the file if it is not one."""
    try:
        report = json.loads(path.read_text())
        rows = report["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("key"), str) for r in rows):
            raise TypeError("rows must be a list of keyed objects")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"{path} is not a glrzoo report ({type(e).__name__}: {str(e)[:120]}); move it away "
                             "or choose another --out") from None
    return rows


def fingerprint(settings: dict, infer_stddev, x, y, model_dirs: Sequence[str]) -> str:
    """sha256 of everything a row depends on: the settings (:meth:`evaluation.suites.Plan.record`),
    the test points and every model's checksums."""
    h = hashlib.sha256()
    h.update(json.dumps({"settings": settings, "infer_stddev": infer_stddev,
                         "schema": SCHEMA_VERSION}, sort_keys=True, default=str).encode())
    for a in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    for d in model_dirs:
        h.update(json.dumps([Path(d).name, read_metadata(d).get("files")], sort_keys=True).encode())
    return h.hexdigest()


def _check_inputs(x, y, infer_stddev) -> None:
    """The test points and the inference noise: finite and in range, or one line naming them (every
    other number is checked by its settings class, :mod:`evaluation.options`)."""
    if len(x) != len(y) or len(x) == 0:
        raise UserInputError(f"need as many labels as examples, and at least one: got {len(x)} examples, {len(y)} labels")
    if not np.all(np.isfinite(x)):
        raise UserInputError("the examples hold NaN or infinite values")
    if infer_stddev is not None and not (math.isfinite(infer_stddev) and 0 <= infer_stddev <= MAX_STDDEV):
        raise UserInputError(f"infer_stddev must be a finite number in [0, {MAX_STDDEV}], got {infer_stddev!r}")


def _check_models(model_dirs, sources, x, dataset: str | None, allow_dataset_mismatch: bool) -> None:
    """Refuse models that cannot take these inputs, and (unless allowed) models trained on another data set."""
    names = [Path(d).name for d in model_dirs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserInputError(f"two models share the name {', '.join(dup)} (rows are keyed by folder name); "
                             "rename or copy one of them")
    for d in dict.fromkeys([*model_dirs, *sources]):
        meta = read_metadata(d)
        shape = (meta.get("architecture") or {}).get("input_shape")
        if shape is not None and list(shape) != list(np.shape(x)[1:]):
            raise UserInputError(f"{d} takes inputs of shape {tuple(shape)}, but the examples have shape "
                                 f"{tuple(np.shape(x)[1:])}; evaluate it on the data set it was trained on")
        trained = (meta.get("dataset") or {}).get("name")
        if dataset is not None and trained is not None and trained != dataset and not allow_dataset_mismatch:
            raise UserInputError(f"{d} was trained on {trained!r} but would be evaluated on {dataset!r}; use "
                                 f"--dataset {trained}, or pass --allow-dataset-mismatch if you mean it")


def _check_suites(entries, x) -> None:
    """Suites that need images, or pixels in [0, 1], refused for other data (one line)."""
    images = [e.name for e in entries if e.images]
    if images and np.ndim(x) != 4:
        raise UserInputError(f"suite {', '.join(repr(n) for n in images)} needs images [N, H, W, C], but the examples "
                             f"have shape {tuple(np.shape(x)[1:])}; leave it out of --suite for this data set")
    pixel_suites = sorted(e.name for e in entries if e.pixels)
    if pixel_suites and (np.min(x) < 0 or np.max(x) > 1):
        raise UserInputError(f"suites {', '.join(pixel_suites)} clip to [0, 1] pixels, but these inputs span "
                             f"[{np.min(x):.3g}, {np.max(x):.3g}]; use --suite clean,voting for this data set")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose another --out (nothing was changed)")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        raise OutputExistsError(f"{out} is not empty and holds no report.json; choose another --out "
                                "(nothing was changed)")


def _settings(row):
    keys = ("eps", "norm", "steps", "restarts", "severity", "stddev", "votes", "eot", "source")
    return " ".join(f"{k}={row[k]}" for k in keys if row.get(k) is not None)


DEFAULT_SUITES = ("clean", "whitebox", "transfer", "gradfree", "corruption", "voting", "distortion")


def evaluate(model_dirs: Sequence[str], x: np.ndarray, y: np.ndarray, suites: Sequence[str | Suite] = DEFAULT_SUITES,
             *, out: str | os.PathLike | None = None, log: Callable[[str], None] = print,
             infer_stddev: float | None = None, dataset: str | None = None, allow_dataset_mismatch: bool = False,
             **settings) -> dict:
    """Evaluate every export in ``model_dirs`` on ``(x, y)``; returns ``{"rows", "counters", "flags"}``.

    Runs each chosen suite's function (:mod:`evaluation.suites`) in registry order, on one shared
    :class:`evaluation.suites.SuiteContext`; ``flags`` is the gradient-masking audit of the rows
    (:func:`evaluation.masking.masking_flags`).

    Args:
        model_dirs: exported model directories (``glrzoo train --out``) or pretrained names.
        x, y: test points ``[N, ...]`` (images in [0, 1] for the pixel suites) and labels ``[N]``.
        suites: registered suite names (:func:`evaluation.suites.list_suites`) or configured suites
            (:func:`evaluation.suites.configure`).
        out: report folder; rows already there with the same settings are kept (a rerun resumes).
        infer_stddev: if set, turn inference noise of this stddev on in every evaluated model (its
            own kind, additive or multiplicative); sources stay noise-free.
        dataset: the name of the data set ``x`` comes from; a model trained on another one is
            refused unless ``allow_dataset_mismatch`` (a model whose input shape differs always is).
        **settings: any field of the shared :class:`evaluation.suites.SuiteSettings` (``eps_list``,
            ``steps``, ``seed``, ...), of a suite's settings (``stddevs``, ``certify_sigmas``, ...)
            or of an attack's (``spsa_samples``), by name; each goes to its owner.
    """
    _check_inputs(x, y, infer_stddev)
    chosen = plan(suites, **settings)  # an unknown setting is a TypeError naming it; a bad value one line
    if out is not None:
        _check_out(Path(out))
    _check_suites([s.entry for s in chosen.suites], x)
    transfer = chosen.of("transfer")
    # a folder or a pretrained name; the checksums are verified once, below (load_model, verify_export)
    model_dirs = [str(model_path(d, log, verify=False)) for d in model_dirs]
    sources = [str(model_path(d, log, verify=False)) for d in (transfer.sources if transfer else ())]
    if transfer is not None:
        chosen = chosen.replace("transfer", sources=tuple(sources))
    _check_models(model_dirs, sources, x, dataset, allow_dataset_mismatch)
    inside = next((m for m in model_dirs if out is not None and Path(out).resolve().is_relative_to(Path(m).resolve())),
                  None)
    if inside is not None:
        raise UserInputError(f"--out {out} is inside the model {inside}, whose files are checksummed; "
                             "write the report elsewhere")
    models = {Path(d).name: load_model(d) for d in model_dirs}  # verifies each export's checksums
    for d in sources:  # sources too, before any row is made
        if Path(d).name not in models:
            verify_export(d)
    ev = Evaluation(Path(out) if out is not None else None, log,
                    fingerprint(chosen.record(), infer_stddev, x, y, list(dict.fromkeys([*model_dirs, *sources]))),
                    models=list(models))
    if infer_stddev is not None:  # evaluate every target with its inference noise on (noisy hardware)
        for model in models.values():
            set_noise(model, infer_stddev=infer_stddev)
    ctx = SuiteContext(models, list(model_dirs), x, np.asarray(y), chosen.shared, ev, attack_settings=chosen.attacks)
    for suite in chosen.suites:  # registry order, whatever order they were asked in
        suite.entry.run(ctx, suite.settings)
    flags = masking_flags(ev.rows)
    ev.save()
    return {"rows": ev.rows, "counters": ev.counters, "flags": flags}
