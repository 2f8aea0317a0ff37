"""TF Serving: models.config, REST and gRPC requests that match the signatures, answers equal to Keras.

Without a ``tensorflow_model_server`` binary the client talks to a loopback stand-in that runs
the SavedModel the way the server does (TF1 loader, feeds by SignatureDef); with the binary on
PATH, the integration test at the end starts the real server.
"""
import shutil
import socket
import subprocess
import time
import urllib.error

import numpy as np
import pytest
import tensorflow as tf
from helpers.serving_standin import Bundle, start_grpc, start_rest

import zoo
from glrzoo.cli import main
from zoo.export import load_model
from zoo.serving import ServingClient, find_exports, grpc_request, models_config, rest_request


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    for name, extra in (("plain", []), ("noisy", ["--train-stddev", "0.5", "--noise", "multiplicative"])):
        assert main(["train", "--model", "mlp", "--epochs", "3", "--quiet", "--model-args", '{"hidden": [16]}',
                     *extra, "--out", str(root / "digits" / name)]) == 0
    return root


@pytest.fixture(scope="module")
def images():
    from zoo.data import load_digits
    return load_digits().x_test[:7]


def test_models_config_lists_every_export_with_a_version_policy(exports, tmp_path):
    text = models_config(find_exports(exports), base="/models")
    assert text.count("config {") == 2 and 'name: "plain"' in text and 'name: "noisy"' in text
    assert 'base_path: "/models/plain"' in text and "latest { num_versions: 1 }" in text
    assert 'model_platform: "tensorflow"' in text
    # parses as the server's ModelServerConfig protobuf
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert [c.name for c in cfg.model_config_list.config] == ["noisy", "plain"]
    specific = text_format.Parse(models_config(find_exports(exports), policy="specific", versions=(1, 2)),
                                 model_server_config_pb2.ModelServerConfig())
    assert list(specific.model_config_list.config[0].model_version_policy.specific.versions) == [1, 2]
    out = tmp_path / "models.config"
    assert main(["serve-config", str(exports), "--out", str(out), "--policy", "all"]) == 0
    assert "all {}" in out.read_text()
    assert main(["serve-config", str(tmp_path / "empty"), "--out", str(tmp_path / "x.config")]) == 2
    assert not (tmp_path / "x.config").exists()


def test_rest_bodies_follow_the_documented_formats(images):
    row = rest_request(images[:2])
    assert set(row) == {"signature_name", "instances"} and len(row["instances"]) == 2
    assert np.asarray(row["instances"][0]["images"]).shape == images.shape[1:]
    col = rest_request(images[:2], "noisy_vote", stddev=0.5, votes=3, fmt="column")
    assert set(col) == {"signature_name", "inputs"} and col["inputs"]["votes"] == 3
    with pytest.raises(ValueError, match="columnar|column"):
        rest_request(images[:2], "noisy_vote", stddev=0.5, votes=3, fmt="row")
    req = grpc_request("plain", images[:2], "noisy_vote", 0.5, 3)
    assert req.model_spec.signature_name == "noisy_vote" and set(req.inputs) == {"images", "stddev", "votes"}
    assert tf.make_ndarray(req.inputs["votes"]).dtype == np.int32


@pytest.fixture(scope="module")
def servers(exports):
    bundles = {p.name: Bundle(str(p / "1")) for p in find_exports(exports)}
    rest, rest_port = start_rest(bundles)
    grpc_server, grpc_port = start_grpc(bundles)
    yield rest_port, grpc_port
    rest.shutdown()
    grpc_server.stop(None)


@pytest.mark.parametrize("protocol,fmt", [("rest", "row"), ("rest", "column"), ("grpc", None)])
def test_client_answers_equal_the_keras_model(exports, servers, images, protocol, fmt):
    rest_port, grpc_port = servers
    model = load_model(exports / "digits" / "plain")
    client = ServingClient("plain", rest_port=rest_port, grpc_port=grpc_port)
    out = client.predict(images, protocol=protocol, **({"fmt": fmt} if fmt else {}))
    with zoo.noise_override(0.0):
        expected = tf.nn.softmax(model(images, training=False)).numpy()
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["classes"], expected.argmax(-1))
    votes = client.noisy_vote(images, stddev=0.8, votes=9, protocol=protocol)
    assert votes["vote_counts"].shape == (len(images), 10) and (votes["vote_counts"].sum(1) == 9).all()
    np.testing.assert_array_equal(votes["classes"], votes["vote_counts"].argmax(-1))


def test_bad_requests_are_refused_not_crashing(servers, images):
    rest_port, grpc_port = servers
    client = ServingClient("plain", rest_port=rest_port, grpc_port=grpc_port)
    import grpc
    for bad in (dict(stddev=0.5, votes=10**6), dict(stddev=-1.0, votes=3), dict(stddev=1e9, votes=3)):
        with pytest.raises(urllib.error.HTTPError):
            client.noisy_vote(images, protocol="rest", **bad)
        with pytest.raises(grpc.RpcError):
            client.noisy_vote(images, protocol="grpc", **bad)
    with pytest.raises(urllib.error.HTTPError):
        client.predict(images * 300.0)  # pixels outside [0, 1]
    with pytest.raises(grpc.RpcError):
        client.predict(images[:, :4], protocol="grpc")  # wrong shape


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (not installable here; see README 'Serving')")
def test_real_server_integration(exports, images, tmp_path):
    config = tmp_path / "models.config"
    assert main(["serve-config", str(exports), "--out", str(config)]) == 0
    rest_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                             f"--model_config_file={config}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = ServingClient("plain", rest_port=rest_port, grpc_port=grpc_port)
        for _ in range(60):
            try:
                client.predict(images[:1])
                break
            except Exception:
                time.sleep(1)
        model = load_model(exports / "digits" / "plain")
        expected = tf.nn.softmax(model(images, training=False)).numpy()
        for protocol in ("rest", "grpc"):
            np.testing.assert_allclose(client.predict(images, protocol=protocol)["probabilities"], expected, atol=1e-5)
            assert (client.noisy_vote(images, 0.5, 5, protocol=protocol)["vote_counts"].sum(1) == 5).all()
    finally:
        proc.terminate()
        proc.wait(10)
