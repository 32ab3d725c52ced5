"""Datasets for the experiment, none of which needs a download.

Three sources, all returned as a :class:`Dataset` with standardised features
(mean 0, standard deviation 1 per feature, both measured on the training split
only) and a seeded train / validation / test split:

* ``"digits"`` — scikit-learn's bundled 8×8 handwritten digits (1,797 images,
  64 features, 10 classes). Needs the ``data`` extra (``pip install
  'sparsify[data]'``).
* ``"generated"`` — a 10-class problem the code makes itself (a Gaussian
  mixture pushed through a fixed random nonlinear map into 64 features), for
  runs without scikit-learn.
* ``"mnist:DIR"`` — MNIST read from the four IDX files the user has in ``DIR``
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
  gzipped). The validation split is carved from the training files.

The batch ``S`` that pruning uses is drawn from the validation split
(:func:`draw_S`), never from the test split.
"""
from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import check_rng, check_scalar

#: names accepted by :func:`load_dataset` (plus ``"mnist:DIR"``).
DATASETS = ("digits", "generated")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Standardised features and integer labels of one seeded split.

    ``X_*`` have shape (n_points, n_features) and dtype float64; ``y_*`` are
    int64 labels in ``0 .. n_classes - 1``.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        """Values per point (``c*h*w`` for images reshaped to NCHW)."""
        return int(np.prod(self.X_train.shape[1:]))

    def describe(self) -> str:
        return (
            f"{self.name}: {self.n_features} features, {self.n_classes} classes, "
            f"train/val/test = {len(self.y_train)}/{len(self.y_val)}/{len(self.y_test)}"
        )


# --- splitting and scaling -------------------------------------------------------
def _check_fraction(value, name: str) -> float:
    return check_scalar(value, name, low=0.0, high=1.0, low_open=True, high_open=True)


def stratified_split(y: np.ndarray, fractions, rng=None) -> list[np.ndarray]:
    """Split indices ``0..len(y)-1`` into parts with the given fractions, per class.

    ``fractions`` lists the fractions of all parts but the last, which gets the
    rest. Within each class the indices are shuffled with ``rng`` and cut at
    ``round(fraction * class size)``, so every part holds every class in
    (nearly) the data's proportions. Each part is returned sorted.
    """
    gen = check_rng(rng)
    y = np.asarray(y)
    fractions = [float(f) for f in fractions]
    if sum(fractions) >= 1.0:
        raise ValueError(f"fractions: must sum to less than 1 (the last part gets the rest), got {fractions}.")
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[gen.permutation(idx.size)]
        cuts = np.round(np.cumsum(fractions) * idx.size).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every array by the training split's per-feature mean and std.

    A constant feature (std 0, e.g. a border pixel) is centred but not scaled.
    """
    constant = np.ptp(train, axis=0) == 0 if len(train) else np.ones(train.shape[1], bool)
    mean = np.where(constant, train[0] if len(train) else 0.0, train.mean(axis=0))
    std = np.where(constant, 1.0, train.std(axis=0))  # rounding gives a constant a tiny nonzero std
    return [(a - mean) / std for a in (train, *others)]


def _from_arrays(name: str, X: np.ndarray, y: np.ndarray, val: float, test: float, rng) -> Dataset:
    """Split ``X, y`` into train/val/test (stratified, seeded) and standardise."""
    val = _check_fraction(val, "val_fraction")
    test = _check_fraction(test, "test_fraction")
    if val + test >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction: must leave points for training (sum < 1), got {val} + {test}."
        )
    i_test, i_val, i_train = stratified_split(y, [test, val], rng)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    X_train, X_val, X_test = _standardise(X[i_train], X[i_val], X[i_test])
    return Dataset(name, X_train, y[i_train], X_val, y[i_val], X_test, y[i_test], int(y.max()) + 1)


# --- the three sources -------------------------------------------------------------
def load_digits(*, val_fraction: float = 0.2, test_fraction: float = 0.2, rng=0) -> Dataset:
    """scikit-learn's bundled 8×8 digits, standardised, with a seeded stratified split.

    Raises ImportError (with the install command) when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError:
        raise ImportError(
            "data: the 'digits' dataset needs scikit-learn, which is not installed; install the data "
            "extra with  pip install 'sparsify[data]'  or use --data generated (made by sparsify itself)."
        ) from None
    bunch = _sk_load_digits()
    return _from_arrays("digits", bunch.data, bunch.target, val_fraction, test_fraction, rng)


def make_generated(n_points: int = 2000, *, n_features: int = 64, n_classes: int = 10, latent: int = 12,
                   noise: float = 1.0, val_fraction: float = 0.2, test_fraction: float = 0.2,
                   rng=0) -> Dataset:
    """A classification problem sparsify makes itself (no scikit-learn, no download).

    Each class c has a centre ``mu_c ~ N(0, I)`` in a ``latent``-dimensional
    space; a point of class c is ``u = mu_c + noise * N(0, I)``. Features are
    ``x = tanh(u @ M1) @ M2 + 0.1 * N(0, I)`` with fixed random matrices
    ``M1`` (latent × 2·latent) and ``M2`` (2·latent × n_features), so the
    classes overlap a little and are not linearly separable in ``x`` by
    construction. Everything is drawn from ``rng``; the same seed gives the
    same data.
    """
    for value, name in ((n_points, "n_points"), (n_features, "n_features"), (n_classes, "n_classes"),
                        (latent, "latent")):
        check_scalar(value, name, kind="int", low=1)
    if n_classes < 2 or n_points < 5 * n_classes:
        raise ValueError(
            f"n_points, n_classes: need at least 2 classes and 5 points per class, got "
            f"n_points={n_points}, n_classes={n_classes}."
        )
    gen = check_rng(rng)
    centres = gen.standard_normal((n_classes, latent)) * 1.5
    M1 = gen.standard_normal((latent, 2 * latent)) / math.sqrt(latent)
    M2 = gen.standard_normal((2 * latent, n_features)) / math.sqrt(2 * latent)
    y = np.arange(n_points) % n_classes
    y = y[gen.permutation(n_points)]
    u = centres[y] + noise * gen.standard_normal((n_points, latent))
    X = np.tanh(u @ M1) @ M2 + 0.1 * gen.standard_normal((n_points, n_features))
    return _from_arrays("generated", X, y, val_fraction, test_fraction, gen)


# --- IDX files (MNIST) ----------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions d, then d big-endian uint32 sizes; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"data: could not read IDX file {str(path)!r} ({exc}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"data: {str(path)!r} is not an IDX file (expected magic bytes 00 00 <type> <ndim>, got "
            f"{raw[:4].hex(' ')}); MNIST files are named like train-images-idx3-ubyte."
        )
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"data: IDX file {str(path)!r} has a truncated header ({ndim} dimensions).")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"data: IDX file {str(path)!r} declares shape {shape} ({expected} bytes) but holds {len(raw)} bytes; "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    candidates = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise ValueError(
        f"data: {str(directory)!r} has no file {stem!r} (or {stem}.gz); --data mnist:DIR expects the four MNIST "
        "IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte in DIR."
    )


def load_mnist(directory, *, val_fraction: float = 1 / 12, rng=0) -> Dataset:
    """MNIST from the user's IDX files in ``directory`` (no download).

    Images are flattened to 784 features scaled to [0, 1] and then
    standardised with the training split's statistics. The test split is the
    t10k files; the validation split (``val_fraction`` of the training files,
    stratified and seeded; 5,000 of 60,000 by default) is where ``S`` comes from.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"data: mnist directory {str(directory)!r} does not exist; use --data mnist:DIR.")
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(directory, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(directory, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"data: {split} images {images.shape} and labels {labels.shape} do not match "
                "(expected (n, rows, cols) and (n,))."
            )
        arrays[split] = (images.reshape(len(images), -1).astype(np.float64) / 255.0, labels.astype(np.int64))
    X, y = arrays["train"]
    X_test, y_test = arrays["t10k"]
    if X.shape[1] != X_test.shape[1]:
        raise ValueError(f"data: train images have {X.shape[1]} pixels but t10k images have {X_test.shape[1]}.")
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    i_val, i_train = stratified_split(y, [val_fraction], rng)
    X_train, X_val, X_test = _standardise(X[i_train], X[i_val], X_test)
    n_classes = int(max(y.max(), y_test.max())) + 1
    return Dataset("mnist", X_train, y[i_train], X_val, y[i_val], X_test, y_test, n_classes)


def load_dataset(spec: str, *, rng=0) -> Dataset:
    """The dataset named by ``spec``: ``"digits"``, ``"generated"`` or ``"mnist:DIR"``."""
    if not isinstance(spec, str):
        raise TypeError(f"data: expected a dataset name (str), got {type(spec).__name__}.")
    if spec == "digits":
        return load_digits(rng=rng)
    if spec == "generated":
        return make_generated(rng=rng)
    if spec.startswith("mnist:"):
        return load_mnist(spec[len("mnist:"):], rng=rng)
    raise ValueError(
        f"data: unknown dataset {spec!r}; use 'digits' (scikit-learn's bundled digits), 'generated' "
        "(made by sparsify, no scikit-learn needed) or 'mnist:DIR' (a folder with the MNIST IDX files)."
    )


def have_sklearn() -> bool:
    """True when scikit-learn (the ``data`` extra) can be imported."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def draw_S(dataset: Dataset, size: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """``size`` distinct points of the validation split (and their labels), seeded.

    Raises ValueError when the validation split is smaller than ``size``.
    """
    size = check_scalar(size, "s_size", kind="int", low=1)
    n_val = len(dataset.y_val)
    if size > n_val:
        raise ValueError(
            f"s_size: S needs {size} points but the validation split of {dataset.name} has only {n_val}; "
            "pass a smaller s_size."
        )
    gen = check_rng(rng)
    idx = np.sort(gen.choice(n_val, size=int(size), replace=False))
    return dataset.X_val[idx], dataset.y_val[idx]


def authors_s_size(network_or_widths, delta: float = 1e-16) -> int:
    """The authors' size of S: ``ceil(3 ln(8 eta eta* / delta))``.

    ``eta`` counts the neurons of all layers with weights (hidden and output),
    ``eta*`` is the widest of them. Accepts a Network or the list of widths
    including the input (e.g. ``[784, 300, 100, 10]`` → 152 at delta = 1e-16).
    """
    from .bounds import network_eta, size_of_S

    if hasattr(network_or_widths, "layers"):
        eta, eta_star = network_eta(network_or_widths)
    else:
        outs = [int(w) for w in list(network_or_widths)[1:]]
        if not outs or min(outs) < 1:
            raise ValueError(f"widths: need the input width and at least one layer, got {network_or_widths!r}.")
        eta, eta_star = sum(outs), max(outs)
    return size_of_S(eta, eta_star, delta, K=3.0)
