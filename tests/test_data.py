"""Datasets without downloads: generated data, bundled digits, user IDX files."""
import gzip
import struct
import sys

import numpy as np
import pytest

from sparsify import data


def test_generated_dataset_is_seeded_standardised_and_stratified():
    a = data.make_generated(500, rng=3)
    b = data.make_generated(500, rng=3)
    c = data.make_generated(500, rng=4)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    assert a.n_features == 64 and a.n_classes == 10
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 500
    np.testing.assert_allclose(a.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(a.X_train.std(axis=0), 1.0, rtol=1e-12)
    # every class in every split, in (nearly) equal shares
    for y in (a.y_train, a.y_val, a.y_test):
        counts = np.bincount(y, minlength=10)
        assert counts.min() >= counts.max() - 1, counts


def test_splits_are_disjoint_and_cover_the_data():
    y = np.repeat(np.arange(4), [10, 7, 5, 3])
    parts = data.stratified_split(y, [0.2, 0.3], rng=0)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(y.size))


def test_digits_loads_when_scikit_learn_is_there():
    pytest.importorskip("sklearn")
    d = data.load_digits(rng=0)
    assert d.n_features == 64 and d.n_classes == 10
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0.0, atol=1e-12)


def test_missing_scikit_learn_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'sparsify\[data\]'.*--data generated"):
        data.load_dataset("digits")


def write_idx(path, array, compress=False):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    train_y = np.arange(60) % 10
    train_x = rng.integers(0, 256, size=(60, 4, 3))
    train_x[:, 0, 0] = 7  # a constant pixel, like MNIST's borders
    test_y = np.arange(20) % 10
    test_x = rng.integers(0, 256, size=(20, 4, 3))
    write_idx(tmp_path / "train-images-idx3-ubyte", train_x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_x, compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y, compress=True)
    return tmp_path, train_x, train_y, test_x, test_y


def test_read_idx_round_trips(mnist_dir):
    folder, train_x, train_y, test_x, _ = mnist_dir
    np.testing.assert_array_equal(data.read_idx(folder / "train-images-idx3-ubyte"), train_x)
    np.testing.assert_array_equal(data.read_idx(folder / "train-labels-idx1-ubyte"), train_y)
    np.testing.assert_array_equal(data.read_idx(folder / "t10k-images-idx3-ubyte.gz"), test_x)


def test_mnist_from_idx_files(mnist_dir):
    folder, train_x, train_y, test_x, test_y = mnist_dir
    d = data.load_dataset(f"mnist:{folder}", rng=0)
    assert d.name == "mnist" and d.n_features == 12 and d.n_classes == 10
    assert len(d.y_train) + len(d.y_val) == 60 and len(d.y_test) == 20
    np.testing.assert_array_equal(d.y_test, test_y)
    # standardised with the training split's statistics; the constant pixel is only centred
    np.testing.assert_allclose(d.X_train[:, 0], 0.0, atol=1e-12)
    _, i_train = data.stratified_split(train_y, [1 / 12], rng=0)
    flat = train_x.reshape(60, -1)[i_train] / 255.0
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    mean[0], std[0] = 7 / 255.0, 1.0  # the constant pixel
    np.testing.assert_allclose(d.X_test, (test_x.reshape(20, -1) / 255.0 - mean) / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(d.y_train, train_y[i_train])


def test_idx_errors_are_clear(tmp_path, mnist_dir):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="is not an IDX file"):
        data.read_idx(bad)
    folder = mnist_dir[0]
    truncated = tmp_path / "trunc"
    truncated.write_bytes((folder / "train-labels-idx1-ubyte").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(truncated)
    (folder / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="has no file 'train-labels-idx1-ubyte'"):
        data.load_dataset(f"mnist:{folder}")
    with pytest.raises(ValueError, match="does not exist"):
        data.load_dataset(f"mnist:{tmp_path / 'nowhere'}")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="data: unknown dataset 'cifar'"):
        data.load_dataset("cifar")


def test_S_comes_from_the_validation_split():
    d = data.make_generated(300, rng=0)
    X_S, y_S = data.draw_S(d, 20, rng=1)
    assert X_S.shape == (20, 64)
    rows = {tuple(r) for r in d.X_val}
    assert all(tuple(r) in rows for r in X_S)
    X_S2, _ = data.draw_S(d, 20, rng=1)
    np.testing.assert_array_equal(X_S, X_S2)
    with pytest.raises(ValueError, match="s_size: S needs 1000 points"):
        data.draw_S(d, 1000)


def test_authors_s_size_reference_point():
    # docs/theory.md S14: 784-300-100-10 at delta = 1e-16 gives 152 points
    assert data.authors_s_size([784, 300, 100, 10]) == 152
    eta, eta_star = 410, 300
    assert data.authors_s_size([784, 300, 100, 10], 1e-6) == int(np.ceil(3 * np.log(8 * eta * eta_star / 1e-6)))
