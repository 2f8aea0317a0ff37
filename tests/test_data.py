import numpy as np
import pytest

from zoo import data


def test_digits_split_is_deterministic_and_in_range(digits):
    assert digits.x_train.shape == (1437, 8, 8, 1) and digits.x_test.shape == (360, 8, 8, 1)
    assert digits.x_train.dtype == np.float32 and 0.0 <= digits.x_train.min() and digits.x_train.max() == 1.0
    assert np.bincount(digits.y_test).min() >= 34  # stratified: every class present
    np.testing.assert_array_equal(data.load_digits().y_test, digits.y_test)


def test_mnist_from_shared_idx(data_dir):
    if not (data_dir / "mnist").is_dir():
        pytest.skip(f"{data_dir}/mnist absent")
    d = data.load_dataset("mnist", data_dir)
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    # label histograms from the data set's README
    assert np.bincount(d.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(d.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(d.x_train.mean() * 255 - 33.318) < 0.01


def test_fashion_and_strokes(data_dir):
    if not (data_dir / "fashion-mnist").is_dir() or not (data_dir / "mnist-stroke-sequences").is_dir():
        pytest.skip("fashion-mnist or stroke sequences absent")
    f = data.load_dataset("fashion_mnist", data_dir)
    assert f.x_test.shape == (10000, 28, 28, 1) and np.bincount(f.y_test).tolist() == [1000] * 10
    s = data.load_dataset("mnist_strokes", data_dir)
    assert s.x_train.shape == (60000, 117, 4) and s.x_test.shape == (10000, 117, 4)
    assert np.all(s.x_test[:, -1, 3] == 1)  # every sequence ends with end-of-digit
    m = data.load_dataset("mnist", data_dir)
    np.testing.assert_array_equal(s.y_test, m.y_test)


def test_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.delenv("GLRZOO_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_dataset("mnist_strokes", tmp_path)
    assert str(tmp_path) in str(err.value) and "GLRZOO_DATA_DIR" in str(err.value)
    with pytest.raises(ValueError, match="unknown data set"):
        data.load_dataset("imagenet")


def test_idx_reader_and_sequences(tmp_path):
    import gzip
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
    labels = np.array([1, 2], np.uint8)
    for stem in ("train", "t10k"):
        with gzip.open(tmp_path / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + images.tobytes())
        with gzip.open(tmp_path / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + labels.tobytes())
    d = data.load_idx(tmp_path)
    np.testing.assert_allclose(d.x_train[..., 0] * 255, images, atol=1e-4)
    assert d.y_test.tolist() == [1, 2]
    assert data.as_sequences(d.x_train).shape == (2, 3, 4)
