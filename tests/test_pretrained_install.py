"""Pretrained models from any install: the index, downloads from a server on 127.0.0.1 (tampered,
truncated and cut-off files refused and not cached, offline with an empty cache: one line), the
shipped metadata free of machine paths, and (large) a wheel installed outside the checkout."""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from glrzoo.cli import main
from zoo import pretrained
from zoo.pretrained import DownloadError, build_index, builtin_root, index_text, write_index

REPO = Path(__file__).resolve().parents[1]
NAME = "digits/glr_threshold_mlp"
WEIGHTS = "1/variables/variables.data-00000-of-00001"


def test_index_matches_the_files():
    committed = (builtin_root() / "index.json").read_text()
    assert committed == index_text(build_index(builtin_root())), \
        "saved_models/index.json drifted from the files: run 'glrzoo pretrained readme' (or 'index')"
    assert set(json.loads(committed)["models"]) == set(pretrained.list_pretrained(builtin_root()))


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_shipped_metadata_names_the_data_set_not_a_machine_path():
    for name in pretrained.list_pretrained(builtin_root()):
        meta = zoo.describe_pretrained(name)
        paths = [s for s in _strings(meta) if s.startswith(("/", "~")) or "/work/" in s or "/home/" in s
                 or "--data-dir" in s]
        assert not paths, (name, paths)
        ds = meta["dataset"]
        assert ds["name"] and isinstance(ds["files"], dict), name
        if ds["name"] != "digits":  # read from local files: their checksums are recorded
            assert ds["files"] and all(len(v) == 64 for v in ds["files"].values()), name


class _Handler(http.server.SimpleHTTPRequestHandler):
    cut: set = set()  # URL paths answered with the full Content-Length but half the body

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path in self.cut:
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A static server on 127.0.0.1 over ``tmp_path/served``, laid out like saved_models/: the shipped
    digits model and a copy under a name the installed index does not list, with their index.json."""
    served = tmp_path / "served"
    shutil.copytree(builtin_root() / NAME, served / NAME)
    shutil.copytree(builtin_root() / NAME, served / "digits" / "extra_mlp")
    write_index(served)
    handler = type("Handler", (_Handler,), {"cut": set()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield served, url, handler, httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def no_local(tmp_path, monkeypatch):
    """No local pretrained folder, an empty cache: every model must come from the server."""
    monkeypatch.setenv("GLRZOO_PRETRAINED_DIR", str(tmp_path / "no_local_models"))
    monkeypatch.setenv("GLRZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GLRZOO_PRETRAINED_URL", raising=False)
    return tmp_path / "cache" / "models"


def _cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_download_checks_every_file_and_caches_only_good_copies(server, no_local, monkeypatch, digits):
    served, url, handler, httpd = server
    cache = no_local
    monkeypatch.setenv("GLRZOO_PRETRAINED_URL", url)
    good = (served / NAME / WEIGHTS).read_bytes()

    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0xFF
    (served / NAME / WEIGHTS).write_bytes(bytes(tampered))
    with pytest.raises(DownloadError, match="does not match its sha256") as e:
        zoo.load_pretrained(NAME)
    assert "\n" not in str(e.value) and _cached_files(cache) == []

    (served / NAME / WEIGHTS).write_bytes(good[:len(good) // 2])  # truncated file, honest length
    with pytest.raises(DownloadError, match="tampered or truncated"):
        zoo.load_pretrained(NAME)
    assert _cached_files(cache) == []

    (served / NAME / WEIGHTS).write_bytes(good)
    handler.cut.add(f"/{NAME}/{WEIGHTS}")  # connection cut mid-file
    with pytest.raises(DownloadError, match="cannot download"):
        zoo.load_pretrained(NAME)
    assert _cached_files(cache) == []
    handler.cut.clear()

    model = zoo.load_pretrained(NAME)  # checked against the installed index, then cached
    reference = zoo.load_pretrained(NAME, root=builtin_root())
    np.testing.assert_allclose(model(digits.x_test[:8]), reference(digits.x_test[:8]), atol=1e-6)
    assert (cache / NAME / "metadata.json").is_file()
    assert not [p for p in (cache / "digits").iterdir() if p.name.startswith(".")]  # no temporary folder left

    assert zoo.describe_pretrained("extra_mlp")["architecture"]["name"] == "glr_mlp"  # via the server's index.json
    assert (cache / "digits" / "extra_mlp" / "model.keras").is_file()

    cached = cache / NAME / WEIGHTS  # a damaged cached copy is fetched again
    cached.write_bytes(cached.read_bytes()[:100])
    zoo.load_pretrained(NAME)
    assert cached.read_bytes() == good

    httpd.shutdown()  # offline: the cache still serves
    import glrzoo
    assert glrzoo.load_pretrained("glr_threshold_mlp") is not None


def test_offline_with_an_empty_cache_is_one_line(server, no_local, monkeypatch, capsys):
    served, url, handler, httpd = server
    httpd.shutdown()
    httpd.server_close()
    monkeypatch.setenv("GLRZOO_PRETRAINED_URL", url)
    for name in (NAME, "not_in_the_installed_index"):
        with pytest.raises(DownloadError) as e:
            zoo.load_pretrained(name)
        message = str(e.value)
        assert "\n" not in message and str(no_local) in message and url in message, message
    assert main(["pretrained", "verify", NAME]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glrzoo: error:") and str(no_local) in err[0] and url in err[0]
    assert _cached_files(no_local) == []

    monkeypatch.delenv("GLRZOO_PRETRAINED_URL")
    with pytest.raises(DownloadError, match="GLRZOO_PRETRAINED_URL is not set") as e:
        zoo.load_pretrained(NAME)
    assert str(no_local) in str(e.value)


def _copy_checkout(dst: Path) -> None:
    """The files a wheel is built from (no build/, egg-info or virtual environment)."""
    ignore = shutil.ignore_patterns("__pycache__", "checkpoints", ".*", "*.egg-info", "models.config")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("zoo", "training", "evaluation", "glrzoo", "saved_models"):
        shutil.copytree(REPO / name, dst / name, ignore=ignore)


LOAD_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import glrzoo, zoo
site = Path(sys.argv[1]).resolve()
assert Path(zoo.__file__).resolve().is_relative_to(site), zoo.__file__
assert zoo.pretrained.builtin_root().is_relative_to(site), zoo.pretrained.builtin_root()
model = zoo.load_pretrained("mnist/lenet_bang")
probs = np.asarray(model(np.zeros((1, 28, 28, 1), np.float32)))
assert probs.shape == (1, 10) and np.all(np.isfinite(probs)), probs
assert glrzoo.load_pretrained("lenet_bang") is not None
print("OK", int(np.argmax(probs)))
"""


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout, built offline with this environment's setuptools."""
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.fail(f"setuptools {setuptools.__version__} cannot build pyproject.toml (needs >= 77): run 'bash .ci/install'")
    src, dist = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    dist.mkdir()
    _copy_checkout(src)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return next(dist.glob("glrzoo-*.whl"))


@pytest.mark.large
def test_wheel_carries_the_models_and_loads_outside_the_checkout(tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for name in pretrained.list_pretrained(builtin_root()):
        assert f"zoo/saved_models/{name}/model.keras" in names and f"zoo/saved_models/{name}/metadata.json" in names
    assert "zoo/saved_models/index.json" in names and not [n for n in names if "/checkpoints/" in n]
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MB")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                              str(site), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLRZOO_PRETRAINED")}
    env.update(PYTHONPATH=str(site), GLRZOO_CACHE=str(tmp_path / "empty_cache"), TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(site)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    cli = subprocess.run([sys.executable, "-m", "glrzoo", "pretrained", "verify", "mnist/lenet_bang"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0 and "every file matches" in cli.stdout, cli.stdout[-3000:] + cli.stderr[-3000:]
    assert not (tmp_path / "empty_cache").exists()  # loaded from the install, nothing downloaded


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("hostile", ["../../escape/x", "ABSOLUTE/escape/x", "digits/../../../escape/x", "..", "./x",
                                     "x/..", "~/x", "a\\..\\..\\x"])
@pytest.mark.parametrize("command", ["verify", "show"])
def test_a_hostile_index_cannot_make_the_cache_touch_anything_outside(hostile, command, server, no_local, monkeypatch,
                                                                       capsys, tmp_path):
    """A server's index.json names where a model goes; a name that leads outside the cache (``..``,
    an absolute path, a backslash path) is refused before anything is deleted or written."""
    served, url, handler, httpd = server
    escape = tmp_path / "escape" / "x"
    escape.mkdir(parents=True)
    (escape / "mine.txt").write_text("the user's file")
    name = hostile.replace("ABSOLUTE", str(tmp_path).lstrip("/")) if hostile.startswith("ABSOLUTE") else hostile
    if hostile.startswith("ABSOLUTE"):
        name = "/" + name
    index = json.loads((served / "index.json").read_text())
    index["models"][name] = index["models"].pop("digits/extra_mlp")
    (served / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("GLRZOO_PRETRAINED_URL", url)
    before = _snapshot(tmp_path / "escape")
    assert main(["pretrained", command, "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glrzoo: error:") and "refused the model name" in err[0], err
    assert _snapshot(tmp_path / "escape") == before
    assert _cached_files(no_local) == []


@pytest.mark.parametrize("name", ["../escape", "/etc", "mnist/../../x", "mnist//cnn6_bp", ".hidden/x"])
def test_a_model_name_from_the_command_line_stays_inside_its_root(name, no_local, capsys):
    assert main(["pretrained", "verify", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused the model name" in err[0], err


def test_commands_take_pretrained_names_and_a_folder_wins(tmp_path, monkeypatch, capsys):
    """``glrzoo evaluate NAME`` uses the pretrained model (verified) and says so; a folder of the same
    name in the working directory wins, and the message says which was used."""
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", NAME, "--suite", "clean", "--n", "40"]
    assert main(args + ["--out", "r1"]) == 0
    err = capsys.readouterr().err
    assert f"{NAME}: pretrained model at {builtin_root() / NAME}" in err
    shutil.copytree(builtin_root() / NAME, tmp_path / NAME)
    assert main(args + ["--out", "r2"]) == 0
    assert "using the folder" in capsys.readouterr().err
    rows = [json.loads((tmp_path / r / "report.json").read_text())["rows"] for r in ("r1", "r2")]
    assert [row["accuracy"] for row in rows[0]] == [row["accuracy"] for row in rows[1]]
    copy = tmp_path / "altered"
    shutil.copytree(builtin_root() / NAME, copy)
    with open(copy / "model.keras", "ab") as f:
        f.write(b"x")
    monkeypatch.setenv("GLRZOO_PRETRAINED_DIR", str(tmp_path / "altered_root"))
    shutil.copytree(copy, tmp_path / "altered_root" / NAME)
    shutil.rmtree(tmp_path / NAME)
    assert main(args + ["--out", "r3"]) == 2  # a name is verified by its sha256 before use
    assert "does not match its sha256" in capsys.readouterr().err


CLIENT_SCRIPT = """
import sys
import numpy as np
from zoo.serving import ServingClient
client = ServingClient("cnn6_bp", rest_port=int(sys.argv[1]))
answer = client.predict(np.zeros((2, 28, 28, 1), np.float32))
assert answer["probabilities"].shape == (2, 10), answer
print("SERVED", answer["classes"].tolist())
"""


@pytest.mark.large  # a few minutes: a fresh virtual environment with the wheel and its dependencies
def test_pip_install_of_the_wheel_is_the_whole_install(tmp_path, data_dir):
    """The installed user's path: the wheel into a fresh venv by pip, its dependencies resolved from
    the package registry (cleverhans included: no --no-deps), then, from a folder outside the
    checkout, a pretrained model evaluated by name with white-box attacks, and a serving client call."""
    import venv

    sys.path.insert(0, str(REPO / "tests"))
    from helpers.serving_standin import Bundle, start_rest

    work = tmp_path / "work"
    work.mkdir()
    wheel = _build_wheel(tmp_path)
    venv.create(tmp_path / "venv", with_pip=True)
    py = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=1800)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLRZOO_PRETRAINED", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(GLRZOO_CACHE=str(tmp_path / "empty_cache"), TF_CPP_MIN_LOG_LEVEL="2", GLRZOO_DATA_DIR=str(data_dir))
    glrzoo = tmp_path / "venv" / "bin" / "glrzoo"
    run = subprocess.run([str(glrzoo), "evaluate", "mnist/cnn6_bp", "--dataset", "mnist", "--suite", "clean,whitebox",
                          "--attacks", "fgsm,pgd,autoattack", "--n", "20", "--out", "r"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads((work / "r" / "report.json").read_text())["rows"]
    attacks = {r["attack"] for r in rows if r["suite"] == "whitebox"}
    assert {"fgsm", "pgd", "autoattack"} <= attacks, attacks
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    site = subprocess.run([str(py), "-c", "import zoo; print(zoo.pretrained.builtin_root())"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    export = Path(site.stdout.strip().splitlines()[-1]) / "mnist" / "cnn6_bp"
    assert export.is_relative_to(tmp_path / "venv"), export
    rest, port = start_rest({"cnn6_bp": Bundle(str(export / "1"))})
    try:
        call = subprocess.run([str(py), "-c", CLIENT_SCRIPT, str(port)], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
    finally:
        rest.shutdown()
    assert call.returncode == 0 and "SERVED" in call.stdout, call.stdout[-3000:] + call.stderr[-3000:]
