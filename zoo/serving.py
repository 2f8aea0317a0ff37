"""TF Serving: a ``models.config`` for a folder of exports, and clients for its REST and gRPC APIs.

An export (:mod:`zoo.export`) is already a TF Serving model base path: ``<export>/1/`` is version 1.
:func:`write_models_config` finds every export under a folder and writes the text-format
``ModelServerConfig`` that ``tensorflow_model_server --model_config_file=...`` reads::

    model_config_list {
      config {
        name: "glr_threshold_ce"
        base_path: "/models/mnist/glr_threshold_ce"
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 1 } }
      }
    }

Requests (see https://www.tensorflow.org/tfx/serving/api_rest): ``POST /v1/models/NAME:predict``
with ``{"signature_name": ..., "instances": [...]}`` (row format: one object per example) or
``{"signature_name": ..., "inputs": {...}}`` (columnar format: one entry per named input, batch
first). ``noisy_vote`` has scalar inputs (``stddev``, ``votes``) that have no batch dimension, so
it can only be sent in the columnar format; :func:`rest_request` says so if asked for rows.
"""
from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import UserInputError
from zoo.export import METADATA, SAVEDMODEL_VERSION, verify_export
from zoo.files import write_text_atomic

POLICIES = ("latest", "all", "specific")


def find_exports(root: str | os.PathLike, verify: bool = True) -> list[Path]:
    """Export directories under ``root`` (each has ``metadata.json`` and a ``1/`` SavedModel).

    With ``verify`` (the default), every one must pass :func:`zoo.export.verify_export` (valid
    metadata, every file listed and matching its sha256), and a folder with ``metadata.json`` but
    no version folder is reported, not skipped: a :class:`UserInputError` names the folder.
    Training runs' ``checkpoints/`` and hidden folders (unfinished exports) are not exports.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"{root} is not a folder; pass the folder that holds the exports (e.g. saved_models)")
    found = []
    for meta in sorted(root.glob(f"**/{METADATA}")):
        rel = meta.parent.relative_to(root).parts
        if "checkpoints" in rel or any(part.startswith(".") for part in rel):
            continue
        if not (meta.parent / SAVEDMODEL_VERSION / "saved_model.pb").is_file():
            if verify:
                raise UserInputError(f"{meta.parent} has {METADATA} but no version folder "
                                     f"{SAVEDMODEL_VERSION}/saved_model.pb, so TF Serving cannot load it; "
                                     f"re-export it or move it out of {root}")
            continue
        if verify:
            verify_export(meta.parent)
        found.append(meta.parent)
    return found


def models_config(exports: list[Path], base: str | None = None, policy: str = "latest", versions=(1,)) -> str:
    """Text-format ``ModelServerConfig`` for ``exports``.

    Args:
        base: rewrite each ``base_path`` as ``base/<path relative to the common root>`` (e.g.
            ``/models`` inside the official container); default the absolute local path.
        policy: ``latest`` (serve the newest version), ``all``, or ``specific`` (``versions``).
    """
    if policy not in POLICIES:
        raise UserInputError(f"unknown version policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if not exports:
        raise UserInputError("no exports found (directories with metadata.json and 1/saved_model.pb)")
    names = [p.name for p in exports]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserInputError(f"model names must be unique for TF Serving; duplicated: {', '.join(dup)}")
    common = Path(os.path.commonpath([str(p.resolve()) for p in exports])) if len(exports) > 1 else exports[0].resolve().parent
    body = {"latest": "latest { num_versions: 1 }", "all": "all {}",
            "specific": "specific { " + " ".join(f"versions: {int(v)}" for v in versions) + " }"}[policy]
    lines = ["model_config_list {"]
    for p in exports:
        path = p.resolve()
        base_path = f"{base.rstrip('/')}/{path.relative_to(common).as_posix()}" if base else str(path)
        lines += ["  config {", f'    name: "{p.name}"', f'    base_path: "{base_path}"',
                  '    model_platform: "tensorflow"', f"    model_version_policy {{ {body} }}", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(root: str | os.PathLike, out: str | os.PathLike, base: str | None = None,
                        policy: str = "latest") -> Path:
    """Write ``models.config`` for every export under ``root`` to ``out`` (atomically)."""
    text = models_config(find_exports(root), base, policy)
    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"{out} is a folder; --out names the models.config file to write")
    if not out.parent.is_dir():
        raise UserInputError(f"{out.parent} does not exist; create it or choose another --out")
    return write_text_atomic(out, text)


def rest_request(images, signature: str = "serving_default", stddev: float | None = None,
                 votes: int | None = None, fmt: str = "row") -> dict:
    """JSON body of a ``:predict`` call for ``images`` (``[N, ...]`` floats in [0, 1])."""
    images = np.asarray(images, np.float32).tolist()
    if signature == "serving_default":
        if fmt == "row":
            return {"signature_name": signature, "instances": [{"images": im} for im in images]}
        return {"signature_name": signature, "inputs": {"images": images}}
    if signature == "noisy_vote":
        if stddev is None or votes is None:
            raise UserInputError("noisy_vote needs stddev and votes")
        if fmt == "row":
            raise UserInputError("noisy_vote has scalar inputs (stddev, votes), which the row format cannot carry; "
                             "use fmt='column'")
        return {"signature_name": signature, "inputs": {"images": images, "stddev": float(stddev), "votes": int(votes)}}
    raise UserInputError(f"unknown signature {signature!r}; choose serving_default or noisy_vote")


def _grpc_modules():
    """``(grpc, predict_pb2, prediction_service_pb2_grpc)``, or one line naming the extra that provides them."""
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError:
        raise UserInputError("the gRPC client needs glrzoo's serving extra: pip install 'glrzoo[serving]' "
                             "(the REST client, protocol='rest', needs nothing more)") from None
    return grpc, predict_pb2, prediction_service_pb2_grpc


def grpc_request(model: str, images, signature: str = "serving_default", stddev: float | None = None,
                 votes: int | None = None, version: int | None = None):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for ``images``."""
    import tensorflow as tf

    _, predict_pb2, _ = _grpc_modules()
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = int(version)
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(images, np.float32)))
    if signature == "noisy_vote":
        if stddev is None or votes is None:
            raise UserInputError("noisy_vote needs stddev and votes")
        req.inputs["stddev"].CopyFrom(tf.make_tensor_proto(np.float32(stddev)))
        req.inputs["votes"].CopyFrom(tf.make_tensor_proto(np.int32(votes)))
    return req


class ServingClient:
    """Calls a running ``tensorflow_model_server`` for one model, over REST or gRPC.

    Example:
        >>> client = ServingClient("glr_threshold_ce", rest_port=8501, grpc_port=8500)
        >>> client.predict(images)["classes"]
        >>> client.noisy_vote(images, stddev=1.0, votes=20, protocol="grpc")["vote_counts"]
    """

    def __init__(self, model: str, host: str = "localhost", rest_port: int = 8501, grpc_port: int = 8500,
                 timeout: float = 30.0):
        self.model, self.host, self.rest_port, self.grpc_port, self.timeout = model, host, rest_port, grpc_port, timeout

    def _rest(self, body: dict) -> dict[str, np.ndarray]:
        url = f"http://{self.host}:{self.rest_port}/v1/models/{self.model}:predict"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            answer = json.loads(resp.read())
        if "predictions" in answer:  # row format answer: a list of per-example objects
            preds = answer["predictions"]
            return {k: np.array([p[k] for p in preds]) for k in preds[0]}
        return {k: np.array(v) for k, v in answer["outputs"].items()}

    def _grpc(self, req) -> dict[str, np.ndarray]:
        import tensorflow as tf

        grpc, _, prediction_service_pb2_grpc = _grpc_modules()
        with grpc.insecure_channel(f"{self.host}:{self.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            resp = stub.Predict(req, self.timeout)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}

    def predict(self, images, protocol: str = "rest", fmt: str = "row") -> dict[str, Any]:
        """``serving_default``: ``{"probabilities": [N, C], "classes": [N]}``."""
        if protocol == "grpc":
            return self._grpc(grpc_request(self.model, images))
        return self._rest(rest_request(images, fmt=fmt))

    def noisy_vote(self, images, stddev: float, votes: int, protocol: str = "rest") -> dict[str, Any]:
        """``noisy_vote``: ``{"vote_counts": [N, C], "classes": [N]}``."""
        if protocol == "grpc":
            return self._grpc(grpc_request(self.model, images, "noisy_vote", stddev, votes))
        return self._rest(rest_request(images, "noisy_vote", stddev, votes, fmt="column"))
