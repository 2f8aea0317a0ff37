import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="run real-data and long tests (marker 'large')")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large test: pass --run-large to run it")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def shared_data_dir() -> Path | None:
    """``$GLRZOO_DATA_DIR`` or ``../shared/data`` beside the repository, if present."""
    env = os.environ.get("GLRZOO_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("no shared data: set GLRZOO_DATA_DIR to a folder with mnist/ (e.g. ../shared/data)")
    return d


@pytest.fixture
def digits():
    from zoo.data import load_digits
    return load_digits()
