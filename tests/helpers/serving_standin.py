"""A loopback stand-in for tensorflow_model_server, for tests where the binary is absent.

It answers the way TF Serving does (https://www.tensorflow.org/tfx/serving/api_rest): the model
is loaded with the TF1 SavedModel loader into a session (what the server's SavedModelBundle
does), each request's inputs are fed by the SignatureDef's tensor names with the SignatureDef's
dtypes, and the outputs are fetched by name. REST: ``POST /v1/models/NAME:predict`` with the row
(``instances``) or columnar (``inputs``) body; rows answer ``predictions``, columns ``outputs``.
gRPC: ``PredictionService.Predict``. Not a replacement for the server: no batching, no versions.
"""
from __future__ import annotations

import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf


class Bundle:
    """One SavedModel in a TF1 session, run by SignatureDef like the server does."""

    def __init__(self, path: str):
        self.graph = tf.Graph()
        self.sess = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta = tf.compat.v1.saved_model.loader.load(self.sess, ["serve"], path)
        self.lock = threading.Lock()

    def run(self, signature: str, inputs: dict) -> dict:
        sig = self.meta.signature_def[signature]
        if set(inputs) != set(sig.inputs):
            raise ValueError(f"signature {signature} takes inputs {sorted(sig.inputs)}, got {sorted(inputs)}")
        feed = {sig.inputs[k].name: np.asarray(v, tf.dtypes.as_dtype(sig.inputs[k].dtype).as_numpy_dtype)
                for k, v in inputs.items()}
        with self.lock:
            return self.sess.run({k: v.name for k, v in sig.outputs.items()}, feed)


def rest_predict(bundle: Bundle, body: dict) -> dict:
    signature = body.get("signature_name", "serving_default")
    if "instances" in body:
        rows = body["instances"]
        names = set(rows[0]) if isinstance(rows[0], dict) else None
        if names is None:
            inputs = {next(iter(bundle.meta.signature_def[signature].inputs)): rows}
        else:
            inputs = {k: [r[k] for r in rows] for k in names}
        out = bundle.run(signature, inputs)
        n = len(rows)
        return {"predictions": [{k: v[i].tolist() for k, v in out.items()} for i in range(n)]}
    out = bundle.run(signature, body["inputs"])
    return {"outputs": {k: v.tolist() for k, v in out.items()}}


def start_rest(bundles: dict[str, Bundle]) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            name = self.path.split("/v1/models/")[-1].split(":")[0]
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer, code = rest_predict(bundles[name], body), 200
            except Exception as e:  # the server answers {"error": ...} with a 400
                answer, code = {"error": str(e).splitlines()[0]}, 400
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def start_grpc(bundles: dict[str, Bundle]):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            bundle = bundles[request.model_spec.name]
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                out = bundle.run(request.model_spec.signature_name or "serving_default", inputs)
            except Exception as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0])
            resp = predict_pb2.PredictResponse()
            for k, v in out.items():
                resp.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return resp

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
