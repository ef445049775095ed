"""Small image data sets for the deep-generative experiments: scikit-learn's digits and IDX files (MNIST format).

Nothing is downloaded: :func:`load_digits` reads the 8×8 digits that scikit-learn ships, and :func:`load_idx`
reads MNIST/FashionMNIST IDX files (optionally gzip-compressed) that the user already has.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from . import _validate

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class ImageData:
    """Images flattened to rows, scaled to [0, 1].

    Attributes
    ----------
    x : ndarray of shape (n_images, height * width)
        Pixel intensities in [0, 1], float64.
    labels : ndarray of shape (n_images,) or None
        Integer class labels when known.
    image_shape : tuple of int
        (height, width) of one image.
    """

    x: np.ndarray
    labels: np.ndarray | None
    image_shape: tuple[int, int]


def load_digits() -> ImageData:
    """The 1,797 8×8 handwritten digits shipped with scikit-learn, scaled to [0, 1].

    Returns
    -------
    ImageData
        ``x`` of shape (1797, 64), ``labels`` 0–9, ``image_shape`` (8, 8).

    Raises
    ------
    ImportError
        If scikit-learn (which ships the data file) is not installed.

    Examples
    --------
    >>> from avicore.datasets import load_digits
    >>> data = load_digits()
    >>> data.x.shape, float(data.x.min()), float(data.x.max())
    ((1797, 64), 0.0, 1.0)
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError("load_digits needs scikit-learn, which ships the digits data: "
                          "pip install scikit-learn (it comes with avicore[test]).") from exc
    bunch = _sk_load_digits()
    x = np.ascontiguousarray(bunch.data, dtype=np.float64) / 16.0  # pixel counts are 0..16
    return ImageData(x=x, labels=bunch.target.astype(np.int64), image_shape=(8, 8))


#: A deflate stream expands at most ~1,032-fold: a gzip file declaring more data than this ratio allows is corrupt.
_GZIP_MAX_RATIO = 1100


def read_idx(path: str | os.PathLike[str], *, name: str = "path") -> np.ndarray:
    """Read one IDX file (MNIST's format), gzip-compressed or not, into an array of its stored dtype and shape.

    Parameters
    ----------
    path : str or path-like
        File to read; gzip magic bytes select decompression.
    name : str
        The argument's name in error messages (which also give the file's name).

    Raises
    ------
    ValueError
        If the file is not a valid IDX file (bad magic number, unknown type code, a header declaring more data than
        the file holds — checked from the header and the file size before any data is read —, a size mismatch),
        or a truncated or corrupt gzip stream. Every message names the file.
    """
    label = f"{name} {os.fspath(path)!r}"
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise ValueError(f"{label} must be an IDX file (magic number 0x0000TTNN); got a file starting "
                                 f"with {head!r}.")
            type_code, ndim = head[2], head[3]
            if type_code not in _IDX_DTYPES:
                raise ValueError(f"{label} must be an IDX file with a known type code {sorted(_IDX_DTYPES)}; "
                                 f"got {type_code:#04x}.")
            if ndim < 1:
                raise ValueError(f"{label} must be an IDX file with at least one dimension; got {ndim}.")
            dims = fh.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{label} must be an IDX file; its header is truncated ({4 + len(dims)} of "
                                 f"{4 + 4 * ndim} bytes).")
            shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            dtype = _IDX_DTYPES[type_code]
            expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
            header = 4 + 4 * ndim
            if not compressed and expected != size - header:
                raise ValueError(f"{label} must hold {expected} data bytes for shape {shape} and dtype {dtype}; "
                                 f"got {size - header}.")
            if compressed and expected > _GZIP_MAX_RATIO * size:
                raise ValueError(f"{label} must hold {expected} data bytes for shape {shape} and dtype {dtype}; "
                                 f"a gzip file of {size} bytes cannot (the header is corrupt).")
            raw = fh.read(expected + 1)
    except (EOFError, OSError, zlib.error) as exc:
        if not compressed:
            raise
        raise ValueError(f"{label} must be a complete gzip file; reading it failed: {exc}. The file is truncated "
                         f"or corrupt: download or copy it again.") from None
    if len(raw) != expected:
        got = f"{len(raw)}" if len(raw) < expected else "more"
        raise ValueError(f"{label} must hold {expected} data bytes for shape {shape} and dtype {dtype}; got {got}.")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx(path: str | os.PathLike[str], labels_path: str | os.PathLike[str] | None = None, *,
             n_images: int | None = None) -> ImageData:
    """Load MNIST/FashionMNIST-style IDX images (and optional labels), flattened and scaled to [0, 1].

    Parameters
    ----------
    path : str or path-like
        IDX file of images, shape (n_images, height, width), e.g. ``train-images-idx3-ubyte.gz``.
    labels_path : str or path-like, optional
        IDX file of labels, shape (n_images,).
    n_images : int, optional
        Keep only the first ``n_images`` images (the paper used 10,000).

    Returns
    -------
    ImageData
        ``x`` of shape (n_images, height * width). Integer pixel types are divided by their maximum (255 for
        uint8); float pixel files must already lie in [0, 1].

    Raises
    ------
    ValueError
        On malformed files, images that are not 3-D, labels of another length, or out-of-range float pixels.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from avicore.datasets import load_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte")
    >>> write_idx(path, np.full((2, 3, 3), 255, dtype=np.uint8))
    >>> load_idx(path).x.shape
    (2, 9)
    """
    images = read_idx(path)
    if images.ndim != 3:
        raise ValueError(f"path {os.fspath(path)!r} must hold images of shape (n_images, height, width); got shape "
                         f"{images.shape}.")
    if images.size == 0:
        raise ValueError(f"path {os.fspath(path)!r} must hold at least one image of at least one pixel; got shape "
                         f"{images.shape}.")
    if n_images is not None:
        n_images = _validate.check_int(n_images, "n_images", minimum=1, maximum=images.shape[0])
        images = images[:n_images]
    if np.issubdtype(images.dtype, np.integer):
        x = images.astype(np.float64) / float(np.iinfo(images.dtype).max)
        x = np.clip(x, 0.0, 1.0)
    else:
        with np.errstate(invalid="ignore"):  # a signalling NaN in the file: refused just below
            x = images.astype(np.float64)
        if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(f"path {os.fspath(path)!r} holds float pixels, which must lie in [0, 1]; got range "
                             f"[{x.min()}, {x.max()}].")
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path, name="labels_path").astype(np.int64)
        if labels.ndim != 1:
            raise ValueError(f"labels_path {os.fspath(labels_path)!r} must hold a 1-D array of labels; got shape "
                             f"{labels.shape}.")
        if n_images is not None:
            labels = labels[:n_images]
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels_path {os.fspath(labels_path)!r} must hold one label per image "
                             f"({images.shape[0]}); got {labels.shape[0]}.")
    height, width = images.shape[1:]
    return ImageData(x=np.ascontiguousarray(x.reshape(images.shape[0], height * width)), labels=labels,
                     image_shape=(int(height), int(width)))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``); the inverse of read_idx."""
    arr = np.asarray(array)
    codes = {dt.newbyteorder("=").str: code for code, dt in _IDX_DTYPES.items()}
    key = arr.dtype.newbyteorder("=").str
    if key not in codes:
        raise ValueError("array must have an IDX dtype (uint8, int8, int16, int32, float32, float64); "
                         f"got {arr.dtype}.")
    code = codes[key]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    with open(path, "wb") as fh:
        fh.write(payload)


#: Where :func:`load_fashion_mnist` looks when ``path`` is not given: ``$AVICORE_DATA/fashion-mnist``, then the folder
#: Debian's ``dataset-fashion-mnist`` package installs.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_PREFIX = {"train": "train", "test": "t10k"}


def fashion_mnist_dir(path: str | os.PathLike[str] | None = None) -> str | None:
    """The folder holding FashionMNIST's IDX files: ``path``, else ``$AVICORE_DATA/fashion-mnist``, else
    ``/usr/share/datasets/fashion-mnist``; None when none of them holds the training images."""
    if path is not None:
        return os.fspath(path)
    candidates = []
    if os.environ.get("AVICORE_DATA"):
        candidates.append(os.path.join(os.environ["AVICORE_DATA"], "fashion-mnist"))
    candidates.append(FASHION_MNIST_SYSTEM_DIR)
    for folder in candidates:
        if _idx_file(folder, "train-images-idx3-ubyte") is not None:
            return folder
    return None


def _idx_file(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        full = os.path.join(folder, name)
        if os.path.isfile(full):
            return full
    return None


def load_fashion_mnist(split: str = "train", n: int | None = None,
                       path: str | os.PathLike[str] | None = None) -> ImageData:
    """FashionMNIST (Xiao et al. 2017): 28×28 grey-scale clothing images, flattened to 784 floats in [0, 1].

    Parameters
    ----------
    split : {"train", "test"}
        The 60,000 training images or the 10,000 test images.
    n : int, optional
        Keep only the first ``n`` images (the paper used the first 10,000 training images).
    path : str or path-like, optional
        Folder holding the original IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
        ``t10k-…``; gzipped or not). Default: ``$AVICORE_DATA/fashion-mnist``, else
        ``/usr/share/datasets/fashion-mnist`` (Debian: ``apt-get install dataset-fashion-mnist``).

    Returns
    -------
    ImageData
        ``x`` of shape (n_images, 784), float64 in [0, 1]; ``labels`` 0–9; ``image_shape`` (28, 28).

    Raises
    ------
    FileNotFoundError
        When the files are not there (the message names the Debian package and ``AVICORE_DATA``).
    ValueError
        On a bad ``split`` or ``n``, or a truncated or corrupt file (bad magic number, dimensions or size).

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from avicore.datasets import load_fashion_mnist, write_idx
    >>> folder = tempfile.mkdtemp()
    >>> write_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), np.zeros((3, 28, 28), dtype=np.uint8))
    >>> write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.array([9, 0, 1], dtype=np.uint8))
    >>> data = load_fashion_mnist("test", path=folder)
    >>> data.x.shape, data.labels.tolist()
    ((3, 784), [9, 0, 1])
    """
    prefix = _FASHION_PREFIX.get(split) if isinstance(split, str) else None
    if prefix is None:
        raise ValueError(f"split must be one of {tuple(_FASHION_PREFIX)}; got {split!r}.")
    folder = fashion_mnist_dir(path)
    images = None if folder is None else _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = None if folder is None else _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        where = (f"in {folder!r}" if path is not None else
                 f"in $AVICORE_DATA/fashion-mnist or {FASHION_MNIST_SYSTEM_DIR}")
        raise FileNotFoundError(
            f"FashionMNIST's {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] must be {where}; "
            f"they are not. On Debian/Ubuntu: apt-get install dataset-fashion-mnist; elsewhere put the four "
            f"original IDX files in $AVICORE_DATA/fashion-mnist (or pass path=).")
    data = load_idx(images, labels, n_images=n)
    if data.image_shape != (28, 28):
        raise ValueError(f"{images} must hold 28x28 FashionMNIST images; got {data.image_shape}.")
    return data
