"""CSR export of pruned weights: the archive is plain scipy.sparse CSR data, reads back into the
same network, reports honest byte sizes, and refuses damaged archives; plus ``sparsify convert``."""
import os

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings

import sparsify as sp
from sparsify.cli import main
from sparsify.io.csr import csr_sizes, format_sizes, load_csr, network_to_csr_arrays, save_csr
from sparsify.testing import strategies as sst


def _pruned(dtype=np.float64):
    net = sp.random_mlp([8, 12, 6, 3], "relu", rng=2, dtype=dtype)
    X = np.random.default_rng(3).standard_normal((30, 8)).astype(dtype)
    return sp.prune(net, X, keep=0.4, method="det", rng=0).network


def _same(a, b):
    assert a.activations == b.activations
    for la, lb in zip(a.layers, b.layers):
        assert la.weight.dtype == lb.weight.dtype and np.array_equal(la.weight, lb.weight)
        assert (la.bias is None) == (lb.bias is None)
        assert la.bias is None or la.bias.tobytes() == lb.bias.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_archive_holds_scipy_csr_of_the_kept_weights(tmp_path, dtype):
    net = _pruned(dtype)
    path = save_csr(net, tmp_path / "w.npz")
    with np.load(path, allow_pickle=False) as data:
        for k, layer in enumerate(net.layers):
            m = scipy.sparse.csr_array((data[f"layer{k}.data"], data[f"layer{k}.indices"], data[f"layer{k}.indptr"]),
                                       shape=tuple(data[f"layer{k}.shape"]))
            assert m.dtype == dtype
            assert m.nnz == np.count_nonzero(layer.weight) < layer.weight.size
            assert np.array_equal(m.toarray(), layer.weight)
            assert data[f"layer{k}.bias"].tobytes() == layer.bias.tobytes()
        assert data["activations"].tolist() == net.activations
    _same(net, load_csr(path))
    _same(net, sp.load(path))  # sp.load recognises the archive


@settings(max_examples=15)
@given(sst.networks(dtypes=("float32", "float64"), zeros=True))
def test_round_trip_property(tmp_path_factory, net):
    path = save_csr(net, tmp_path_factory.mktemp("c") / "n.npz")
    _same(net, load_csr(path))


def test_sizes_count_the_stored_arrays(tmp_path):
    net = _pruned(np.float32)
    rows = csr_sizes(net)
    arrays = network_to_csr_arrays(net)
    for k, (row, layer) in enumerate(zip(rows, net.layers)):
        assert row["dense_bytes"] == layer.weight.size * 4
        nnz = np.count_nonzero(layer.weight)
        assert row["nnz"] == nnz
        # float32 values, int32 column indices, n_out + 1 int32 row pointers
        assert row["csr_bytes"] == nnz * 4 + nnz * 4 + (layer.n_out + 1) * 4
        assert row["csr_bytes"] == sum(arrays[f"layer{k}.{p}"].nbytes for p in ("data", "indices", "indptr"))
    table = format_sizes(rows)
    assert "total" in table and str(sum(r["dense_bytes"] for r in rows)) in table


@pytest.mark.parametrize("damage,needle", [
    (lambda a: a.update({"layer0.indices": a["layer0.indices"] + 1000}), "indices/indptr"),
    (lambda a: a.update({"layer0.indptr": a["layer0.indptr"][::-1].copy()}), "indices/indptr"),
    (lambda a: a.update({"layer0.shape": np.array([10**6, 10**6])}), "entries"),
    (lambda a: a.update({"layer0.shape": np.array([3, 8])}), "indices/indptr"),
    (lambda a: a.update({"layer0.shape": np.array([2**20, 2**20, 1])}), "two positive integers"),
    (lambda a: a.update({"layer0.data": np.full_like(a["layer0.data"], np.nan)}), "finite"),
    (lambda a: a.pop("layer1.indptr"), "lacks"),
    (lambda a: a.update({"format": np.array("sparsify-network")}), "not a sparsify CSR archive"),
    (lambda a: a.update({"kinds": np.array(["conv", "dense", "dense"])}), "kinds"),
])
def test_damaged_archives_are_refused(tmp_path, damage, needle):
    arrays = network_to_csr_arrays(_pruned())
    damage(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=needle):
        load_csr(tmp_path / "bad.npz")


def test_unsorted_or_repeated_columns_are_refused(tmp_path):
    net = sp.Network([sp.Dense(np.array([[1.0, 2.0, 0.0]]), None, "identity")])
    arrays = network_to_csr_arrays(net)
    arrays["layer0.indices"] = arrays["layer0.indices"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="unsorted"):
        load_csr(tmp_path / "bad.npz")


def test_pickles_and_junk_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", format=np.array([{"a": 1}], dtype=object))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    for name in ("obj.npz", "junk.npz", "missing.npz"):
        with pytest.raises(ValueError, match="model"):
            load_csr(tmp_path / name)


# --- sparsify convert -----------------------------------------------------------------------------
def test_convert_between_every_format(tmp_path, capsys):
    net = _pruned(np.float32)
    sp.save(net, tmp_path / "a.npz")
    chain = ["a.npz", "b.onnx", "c.safetensors", "d.npz"]
    for src, dst in zip(chain[:-1], chain[1:]):
        pytest.importorskip(dst.split(".")[1] if dst.endswith((".onnx", ".safetensors")) else "numpy")
        assert main(["convert", str(tmp_path / src), str(tmp_path / dst)]) == 0
        assert f"wrote {tmp_path / dst}" in capsys.readouterr().out
    _same(net, sp.load(tmp_path / "d.npz"))


def test_convert_to_csr_prints_the_sizes(tmp_path, capsys):
    net = _pruned()
    sp.save(net, tmp_path / "a.npz")
    assert main(["convert", str(tmp_path / "a.npz"), str(tmp_path / "w.npz"), "--format", "csr"]) == 0
    out = capsys.readouterr().out
    for row in csr_sizes(net):
        assert f"{row['dense_bytes']:>12} {row['csr_bytes']:>12}" in out
    _same(net, load_csr(tmp_path / "w.npz"))


def test_convert_a_plain_export_needs_activations_and_bad_input_writes_nothing(tmp_path, capsys):
    net = _pruned()
    np.savez(tmp_path / "plain.npz", W0=net.layers[0].weight, W1=net.layers[1].weight, W2=net.layers[2].weight)
    assert main(["convert", str(tmp_path / "plain.npz"), str(tmp_path / "o.onnx")]) == 2
    assert "--activations" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "plain.npz"), str(tmp_path / "o.pt"),
                 "--activations", "relu,relu,identity"]) == 2
    err = capsys.readouterr().err
    assert ".npz, .onnx, .safetensors" in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["plain.npz"]


def test_max_bytes_is_passed_on(tmp_path):
    path = save_csr(_pruned(), tmp_path / "w.npz")
    with pytest.raises(ValueError, match="max_bytes|limit"):
        sp.load(path, max_bytes=10)
