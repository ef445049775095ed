"""Data loaders: scikit-learn digits, and IDX files written byte by byte from the format's specification."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from avicore.datasets import load_digits, load_idx, read_idx, write_idx


def _idx_bytes(type_code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    # The IDX header by hand: two zero bytes, the type code, the number of dimensions, then big-endian uint32 sizes.
    return struct.pack(">BBBB", 0, 0, type_code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_load_digits_scaled_to_unit_interval():
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.x.dtype == np.float64
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert data.image_shape == (8, 8)
    assert_array_equal(np.unique(data.labels), np.arange(10))


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_reads_hand_written_uint8_images_and_labels(tmp_path, compress):
    pixels = bytes(range(2 * 3 * 4))
    raw_images = _idx_bytes(0x08, (2, 3, 4), pixels)
    raw_labels = _idx_bytes(0x08, (2,), bytes([7, 3]))
    suffix = ".gz" if compress else ""
    img_path, lab_path = tmp_path / f"img{suffix}", tmp_path / f"lab{suffix}"
    img_path.write_bytes(gzip.compress(raw_images) if compress else raw_images)
    lab_path.write_bytes(gzip.compress(raw_labels) if compress else raw_labels)
    data = load_idx(img_path, lab_path)
    assert data.image_shape == (3, 4)
    assert_allclose(data.x, np.arange(24, dtype=float).reshape(2, 12) / 255.0, rtol=0, atol=0)
    assert_array_equal(data.labels, [7, 3])


def test_load_idx_first_n_images(tmp_path):
    p = tmp_path / "img"
    p.write_bytes(_idx_bytes(0x08, (3, 1, 2), bytes([0, 255, 1, 2, 3, 4])))
    data = load_idx(p, n_images=1)
    assert_allclose(data.x, [[0.0, 1.0]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="n_images must be <= 3; got 4"):
        load_idx(p, n_images=4)


def test_read_idx_big_endian_floats(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(_idx_bytes(0x0D, (2,), struct.pack(">2f", 0.25, 0.5)))
    assert_array_equal(read_idx(p), [0.25, 0.5])


def test_write_idx_round_trip(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    write_idx(tmp_path / "a.gz", arr)
    assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    # write_idx's bytes are the specification's bytes
    write_idx(tmp_path / "b", np.array([1, 2], dtype=np.uint8))
    assert (tmp_path / "b").read_bytes() == _idx_bytes(0x08, (2,), bytes([1, 2]))


def test_bad_idx_files_give_clear_errors(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01")
    name = re.escape(repr(str(p)))
    with pytest.raises(ValueError, match=f"path {name} must be an IDX file"):
        read_idx(p)
    p.write_bytes(_idx_bytes(0x07, (1,), b"\x00"))
    with pytest.raises(ValueError, match=f"path {name} must be an IDX file with a known type code"):
        read_idx(p)
    p.write_bytes(_idx_bytes(0x08, (2, 2), b"\x00\x01\x02"))
    with pytest.raises(ValueError, match=f"path {name} must hold 4 data bytes for shape \\(2, 2\\)"):
        read_idx(p)
    p.write_bytes(_idx_bytes(0x08, (4,), b"\x00\x01\x02\x03"))
    with pytest.raises(ValueError, match=r"images of shape \(n_images, height, width\); got shape \(4,\)"):
        load_idx(p)
    labels = tmp_path / "lab"
    labels.write_bytes(_idx_bytes(0x08, (3,), b"\x00\x01\x02"))
    images = tmp_path / "img"
    images.write_bytes(_idx_bytes(0x08, (2, 1, 1), b"\x00\x01"))
    with pytest.raises(ValueError, match=r"labels_path '.*lab' must hold one label per image \(2\); got 3"):
        load_idx(images, labels)
    with pytest.raises(ValueError, match="array must have an IDX dtype"):
        write_idx(tmp_path / "c", np.zeros(2, dtype=np.complex64))


def test_an_absurd_header_is_refused_before_reading_without_overflow(tmp_path):
    # 2^31 x 2^31 x 4 uint8 = 2^64 bytes: int64 arithmetic wraps to 0; Python integers do not.
    p = tmp_path / "huge-idx3-ubyte"
    p.write_bytes(_idx_bytes(0x08, (2**31, 2**31, 4), b""))
    with pytest.raises(ValueError, match=f"must hold {2**64} data bytes for shape \\(2147483648, 2147483648, 4\\)"
                                         f" and dtype uint8; got 0"):
        read_idx(p)
    gz = tmp_path / "huge.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(0x08, (2**31, 2**31, 4), b"")))
    with pytest.raises(ValueError, match=r"huge\.gz' must hold 18446744073709551616 data bytes .* a gzip file of \d+ "
                                         r"bytes cannot \(the header is corrupt\)"):
        read_idx(gz)


def test_a_truncated_gz_file_gives_a_value_error_naming_it(tmp_path):
    whole = gzip.compress(_idx_bytes(0x08, (50, 4, 4), bytes(range(256)) * 3 + bytes(32)))
    p = tmp_path / "cut-idx3-ubyte.gz"
    p.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match=r"path '.*cut-idx3-ubyte\.gz' must be a complete gzip file; reading it "
                                         r"failed: .*truncated or corrupt"):
        read_idx(p)
    images = tmp_path / "img"
    write_idx(images, np.zeros((50, 1, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels_path '.*cut-idx3-ubyte\.gz' must be a complete gzip file"):
        load_idx(images, p)
