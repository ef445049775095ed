"""avicore.datasets.load_fashion_mnist on small IDX files the tests write (no download, no system data needed)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from avicore.datasets import load_fashion_mnist, write_idx


def _write_split(folder, prefix, n, gz, rng):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_reads_both_splits_scaled_to_unit_interval(tmp_path, gz):
    rng = np.random.default_rng(0)
    train = _write_split(tmp_path, "train", 6, gz, rng)
    test = _write_split(tmp_path, "t10k", 4, gz, rng)
    for split, (images, labels) in (("train", train), ("test", test)):
        data = load_fashion_mnist(split, path=tmp_path)
        assert data.x.dtype == np.float64 and data.x.shape == (images.shape[0], 784) and data.image_shape == (28, 28)
        np.testing.assert_array_equal(data.x, images.reshape(len(images), 784) / 255.0)
        np.testing.assert_array_equal(data.labels, labels)
    first = load_fashion_mnist("train", n=2, path=tmp_path)
    np.testing.assert_array_equal(first.x, train[0][:2].reshape(2, 784) / 255.0)


def test_default_folder_comes_from_avicore_data(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images, _ = _write_split(folder, "train", 3, True, np.random.default_rng(1))
    _write_split(folder, "t10k", 2, True, np.random.default_rng(2))
    monkeypatch.setenv("AVICORE_DATA", str(tmp_path))
    np.testing.assert_array_equal(load_fashion_mnist().x, images.reshape(3, 784) / 255.0)


def test_missing_files_name_the_debian_package_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("AVICORE_DATA", str(tmp_path))
    monkeypatch.setattr("avicore.datasets.FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*AVICORE_DATA"):
        load_fashion_mnist()
    _write_split(tmp_path, "train", 2, False, np.random.default_rng(0))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist("test", path=tmp_path)


def test_corrupt_truncated_and_mismatched_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    images, _ = _write_split(tmp_path, "train", 5, False, rng)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])  # truncated: never a short array
    with pytest.raises(ValueError, match="data bytes"):
        load_fashion_mnist(path=tmp_path)
    path.write_bytes(b"\x00\x00\x08\x07" + raw[4:])  # 7 dimensions claimed: the header no longer fits the data
    with pytest.raises(ValueError):
        load_fashion_mnist(path=tmp_path)
    path.write_bytes(b"\x12\x34" + raw[2:])  # bad magic
    with pytest.raises(ValueError, match="magic number"):
        load_fashion_mnist(path=tmp_path)
    write_idx(path, np.zeros((5, 14, 14), dtype=np.uint8))  # not FashionMNIST's 28x28
    with pytest.raises(ValueError, match="28x28"):
        load_fashion_mnist(path=tmp_path)
    write_idx(path, images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="one label per image"):
        load_fashion_mnist(path=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:-30])  # .gz is preferred, and cut
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz"):  # names the file, never a bare EOFError
        load_fashion_mnist(path=tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\); got 'validation'"):
        load_fashion_mnist("validation", path=tmp_path)
    rng = np.random.default_rng(0)
    _write_split(tmp_path, "train", 3, False, rng)
    with pytest.raises(ValueError, match="n_images"):
        load_fashion_mnist(n=0, path=tmp_path)
