"""Hostile and unlucky input to loading, saving, the network model and the CLI:
forged .npy headers, zip bombs, raw zip members, ambiguous exports, unreadable
paths, outputs that are directories/FIFOs/devices, failing disks, wrong types.
Each is refused with a message naming what is wrong, and nothing is written."""
import errno
import importlib
import io
import os
import stat
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings

import sparsify as sp
from sparsify.cli import main
from sparsify.io import _atomic, _npyfile, atomic_write
from sparsify.testing import strategies as sst

PRUNE_MODULE = importlib.import_module("sparsify.prune")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _net():
    return sp.random_mlp([4, 5, 3], rng=0)


def _npy_bytes(shape, dtype="<f8", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _model_members(net=None):
    """The members of a saved model, as raw bytes (to be edited by a test)."""
    buf = io.BytesIO()
    np.savez(buf, **sp.io.network_to_arrays(net or _net()))
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _load_error(path, exc=ValueError, **kw):
    with pytest.raises(exc) as info:
        sp.load(path, **kw)
    return str(info.value)


# --- forged .npy headers --------------------------------------------------------------------------
def test_a_huge_declared_shape_is_refused_from_the_header_without_allocating(tmp_path):
    members = _model_members()
    members["W0.npy"] = _npy_bytes((10**9,), data=b"\0" * 64)   # 10^9 float64 = 7.5 GiB promised
    path = _zip(tmp_path / "forged.npz", members)
    tracemalloc.start()
    try:
        msg = _load_error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak
    assert "'W0'" in msg and "1000000000" in msg and "bytes" in msg
    assert "pickled" not in msg


def test_a_huge_declared_shape_in_a_data_file_is_refused(tmp_path):
    (tmp_path / "S.npy").write_bytes(_npy_bytes((10**9, 4), data=b"\0" * 64))
    sp.save(_net(), tmp_path / "m.npz")
    code, err = _cli(tmp_path, ["prune", tmp_path / "m.npz", "--data", tmp_path / "S.npy"])
    _assert_one_line(code, err, "--data", "declares shape")


def test_an_oversized_header_is_not_called_pickled(tmp_path):
    members = _model_members()
    huge = "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4), " + " " * 20_000 + "}"
    members["W0.npy"] = b"\x93NUMPY\x02\x00" + len(huge).to_bytes(4, "little") + huge.encode("latin1")
    msg = _load_error(_zip(tmp_path / "big-header.npz", members))
    assert "header" in msg and "'W0'" in msg
    assert "pickled" not in msg


def test_object_members_are_still_called_pickled_and_never_loaded(tmp_path):
    members = _model_members()
    members["W0.npy"] = _npy_bytes((2,), dtype="|O", data=b"\x80\x04N.")
    assert "pickled" in _load_error(_zip(tmp_path / "obj.npz", members))


def test_a_truncated_member_is_blamed_on_the_file(tmp_path):
    members = _model_members()
    members["W0.npy"] = members["W0.npy"][:-8]
    msg = _load_error(_zip(tmp_path / "short.npz", members))
    assert "'W0'" in msg and "damaged" in msg


# --- inflation limit ------------------------------------------------------------------------------
def test_an_archive_inflating_far_beyond_its_size_is_refused(tmp_path, monkeypatch):
    arrays = sp.io.network_to_arrays(_net())
    arrays["W0"] = np.zeros((5, 200_000))          # 8 MB of zeros, a few kB compressed
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **arrays)
    size = path.stat().st_size
    monkeypatch.setattr(_npyfile, "MIN_ALLOWANCE", 0)  # so a small test file shows the ratio rule
    inflated = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    assert inflated > _npyfile.MAX_RATIO * size      # the premise: compressed more than 200:1
    msg = _load_error(path)
    assert "inflate" in msg and "max_bytes=" in msg and str(inflated) in msg


def test_max_bytes_overrides_the_limit_both_ways(tmp_path):
    path = tmp_path / "m.npz"
    sp.save(_net(), path)
    total = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    assert "max_bytes" in _load_error(path, max_bytes=total - 1)
    assert len(sp.load(path, max_bytes=total)) == 2
    with pytest.raises(ValueError, match="max_bytes"):
        sp.load(path, max_bytes=-1)


# --- members that are not what they claim -----------------------------------------------------------
@pytest.mark.parametrize("key", ["format", "activations", "kinds"])
def test_a_raw_member_is_a_clear_error(tmp_path, key):
    members = _model_members()
    members.pop(f"{key}.npy")
    members[key] = b"sparsify-network"
    msg = _load_error(_zip(tmp_path / "raw.npz", members))
    assert f"'{key}'" in msg and ".npy" in msg


def test_kinds_stored_as_a_scalar_is_refused(tmp_path):
    arrays = sp.io.network_to_arrays(_net())
    arrays["kinds"] = np.array("dense")
    np.savez(tmp_path / "m.npz", **arrays)
    msg = _load_error(tmp_path / "m.npz")
    assert "'kinds'" in msg and "1-D" in msg


@pytest.mark.parametrize("stored", [["relu"], []])
def test_short_stored_activations_are_blamed_on_the_file(tmp_path, stored):
    arrays = sp.io.network_to_arrays(_net())
    arrays["activations"] = np.array(stored, dtype=str)
    np.savez(tmp_path / "m.npz", **arrays)
    msg = _load_error(tmp_path / "m.npz")
    assert msg.startswith("model:") and "damaged" in msg
    np.save(tmp_path / "S.npy", np.ones((3, 4)))
    code, err = _cli(tmp_path, ["prune", tmp_path / "m.npz", "--data", tmp_path / "S.npy"])
    _assert_one_line(code, err, "model")
    assert "--activations" not in err


@pytest.mark.parametrize("keys", [("W0", "weight_0"), ("W0", "W00"), ("b0", "bias_0")])
def test_two_spellings_of_one_layer_are_ambiguous(tmp_path, keys):
    arrays = {"W0": np.ones((3, 4)), "b0": np.ones(3)}
    arrays[keys[1]] = np.full(arrays[keys[0]].shape, 2.0)
    np.savez(tmp_path / "plain.npz", **arrays)
    msg = _load_error(tmp_path / "plain.npz", activations=["relu"])
    assert "ambiguous" in msg and repr(keys[0]) in msg and repr(keys[1]) in msg


# --- paths that cannot be read --------------------------------------------------------------------
def test_a_directory_symlink_loop_and_unreadable_file_are_named(tmp_path, monkeypatch):
    assert "is a directory" in _load_error(tmp_path)
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    msg = _load_error(tmp_path / "a")
    assert "symbolic link loop" in msg and "does not exist" not in msg
    sp.save(_net(), tmp_path / "m.npz")

    def denied(*args, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(_npyfile, "open", denied, raising=False)
    msg = _load_error(tmp_path / "m.npz")
    assert "permission denied" in msg and "does not exist" not in msg


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_named(tmp_path):
    sp.save(_net(), tmp_path / "m.npz")
    os.chmod(tmp_path / "m.npz", 0)
    assert "permission denied" in _load_error(tmp_path / "m.npz")


@pytest.mark.parametrize("bad", [io.BytesIO(b"PK"), None, b"m.npz", 3])
def test_load_and_save_take_paths_only(tmp_path, bad):
    with pytest.raises(TypeError, match=f"expected a file path.*got {type(bad).__name__}"):
        sp.load(bad)
    with pytest.raises(TypeError, match=f"expected a file path.*got {type(bad).__name__}"):
        sp.save(_net(), bad)


def test_activations_as_one_string_is_refused_with_a_hint(tmp_path):
    np.savez(tmp_path / "plain.npz", W0=np.ones((3, 4)))
    with pytest.raises(TypeError, match=r"the string 'identity'.*\['identity'\]"):
        sp.load(tmp_path / "plain.npz", activations="identity")
    with pytest.raises(TypeError, match="the string"):
        sp.from_arrays([np.ones((3, 4)), None], "identity")
    assert sp.load(tmp_path / "plain.npz", activations=["identity"]).activations == ["identity"]


# --- saving ---------------------------------------------------------------------------------------
def test_saving_to_a_directory_or_empty_name_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        sp.save(_net(), tmp_path)
    with pytest.raises(ValueError, match="empty"):
        sp.save(_net(), "")
    assert os.listdir(tmp_path) == []


def test_fifos_and_devices_are_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        sp.save(_net(), fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ValueError, match="device"):
        sp.save(_net(), os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "no space left"),
    (errno.EROFS, "read-only"),
    (errno.EACCES, "permission denied"),
])
def test_operating_system_failures_are_explained_and_leave_nothing(tmp_path, code, words):
    def write(fh):
        fh.write(b"half a file")
        raise OSError(code, os.strerror(code))
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "out.npz", write, "--out")
    assert info.value.errno == code
    assert words in str(info.value) and "'" + str(tmp_path / "out.npz") + "'" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_a_refused_temporary_file_is_explained(tmp_path, monkeypatch):
    def refuse(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(_atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(OSError, match="read-only"):
        sp.save(_net(), tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(IS_ROOT, reason="root writes whatever the directory's mode")
def test_a_directory_without_write_permission_is_explained(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="permission denied"):
        sp.save(_net(), locked / "m.npz")
    assert os.listdir(locked) == []


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_new_files_get_the_mode_of_a_plain_open(tmp_path, mask):
    old = os.umask(mask)
    try:
        with open(tmp_path / "plain", "wb"):
            pass
        sp.save(_net(), tmp_path / "m.npz")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == expected


def test_the_umask_is_found_without_proc_too(tmp_path, monkeypatch):
    monkeypatch.setattr(_atomic, "open", _raiser(FileNotFoundError(errno.ENOENT, "no /proc")), raising=False)
    old = os.umask(0o037)
    try:
        sp.save(_net(), tmp_path / "m.npz")
        assert os.umask(0o037) == 0o037                    # restored after being read
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o664])
def test_replacing_a_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    sp.save(_net(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert len(sp.load(path)) == 2


# --- the network model ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128, "garbage", None])
def test_astype_takes_float32_or_float64_only(dtype):
    with pytest.raises(TypeError, match="float32 or float64"):
        _net().astype(dtype)
    assert _net().astype(np.float32).dtype == np.float32


def test_masked_arrays_are_refused_not_unmasked():
    W = np.ma.masked_array(np.ones((3, 4)), mask=np.eye(3, 4, dtype=bool))
    with pytest.raises(TypeError, match="masked"):
        sp.Dense(W, None, "relu")
    with pytest.raises(TypeError, match="masked"):
        sp.Dense(np.ones((3, 4)), np.ma.masked_array(np.ones(3), mask=[1, 0, 0]), "relu")
    with pytest.raises(TypeError, match="masked"):
        _net()(np.ma.masked_array(np.ones((2, 4)), mask=np.zeros((2, 4), bool)))


@pytest.mark.parametrize("bad, words", [(None, "NoneType"), (3, "int"), ("relu", "str")])
def test_network_of_a_non_sequence_names_what_was_given(bad, words):
    with pytest.raises(TypeError, match=f"layers.*: expected a .*{words}"):
        sp.Network(bad)
    with pytest.raises(TypeError, match="single Dense"):
        sp.Network(_net().layers[0])


def test_repr_is_short():
    text = repr(sp.random_mlp([64, 300, 10], rng=0))
    assert "64-300-10" in text and len(text) < 100


@settings(max_examples=10, database=None)
@given(sst.networks(dtypes=("float64", "float32"), n_layers=(1, 3)))
def test_network_code_rebuilds_the_network_bit_for_bit(net):
    rebuilt = eval(sst.network_code(net), {"np": np, "Network": sp.Network, "Dense": sp.Dense})
    assert rebuilt.activations == net.activations
    for a, b in zip(net.layers, rebuilt.layers):
        assert a.weight.dtype == b.weight.dtype and a.weight.tobytes() == b.weight.tobytes()
        assert (a.bias is None) == (b.bias is None)
        assert a.bias is None or a.bias.tobytes() == b.bias.tobytes()


def test_a_falsifying_example_shows_the_network_as_code():
    @settings(max_examples=5, database=None)
    @given(sst.networks_with_inputs())
    def always_fails(pair):
        raise AssertionError("boom")

    with pytest.raises(AssertionError) as info:
        always_fails()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "net = Network([Dense(np.array(" in notes and "X = np.array(" in notes


# --- the command line -----------------------------------------------------------------------------
def _cli(d, argv, capsys=None):
    argv = [str(a) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(d / "OUT.npz")]
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _assert_one_line(code, err, *words):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("pruning ")]
    assert len(lines) == 1 and lines[0].startswith("sparsify prune: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def cli_files(tmp_path):
    sp.save(_net(), tmp_path / "m.npz")
    np.save(tmp_path / "S.npy", np.random.default_rng(0).standard_normal((10, 4)))
    return tmp_path


def _raiser(exc):
    def f(*a, **kw):
        raise exc
    return f


def _cases(d, monkeypatch):
    os.mkfifo(d / "pipe")
    (d / "outdir").mkdir()
    m, s = d / "m.npz", d / "S.npy"
    base = [m, "--data", s, "--keep", "0.5"]
    return {
        "model is a directory": (lambda: None, [d, "--data", s], ["model", "directory"]),
        "out is a directory": (lambda: None, base + ["--out", d / "outdir"], ["--out", "directory"]),
        "json is a directory": (lambda: None, base + ["--json", d / "outdir"], ["--json", "directory"]),
        "out is empty": (lambda: None, base + ["--out", ""], ["--out", "empty"]),
        "out is a FIFO": (lambda: None, base + ["--out", d / "pipe"], ["--out", "FIFO"]),
        "out is a device": (lambda: None, base + ["--out", os.devnull], ["--out", "device"]),
        "model unreadable": (
            lambda: monkeypatch.setattr(_npyfile, "open", _raiser(PermissionError(errno.EACCES, "denied")),
                                        raising=False),
            [m, "--data", s], ["model", "permission denied"]),
        "disk full": (lambda: monkeypatch.setattr(np, "savez", _raiser(OSError(errno.ENOSPC, "No space"))),
                      base, ["--out", "no space left"]),
        "read-only file system": (
            lambda: monkeypatch.setattr(_atomic.tempfile, "mkstemp", _raiser(OSError(errno.EROFS, "ro"))),
            base, ["--out", "read-only"]),
        "foreign OSError": (
            lambda: monkeypatch.setattr(PRUNE_MODULE, "prune", _raiser(PermissionError(
                errno.EACCES, "Permission denied", "/some/cache"))), base, ["/some/cache", "permissions"]),
        "refused allocation": (
            lambda: monkeypatch.setattr(PRUNE_MODULE, "prune", _raiser(MemoryError("Unable to allocate 7 GiB"))),
            base, ["memory", "7 GiB"]),
        "bad zip": (
            lambda: monkeypatch.setattr("sparsify.io.load", _raiser(zipfile.BadZipFile("Bad CRC-32"))),
            base, ["Bad CRC-32", "re-save"]),
    }


CLI_CASES = ["model is a directory", "out is a directory", "json is a directory", "out is empty", "out is a FIFO",
             "out is a device", "model unreadable", "disk full", "read-only file system", "foreign OSError",
             "refused allocation", "bad zip"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_failures_are_one_line_exit_2_and_write_nothing(cli_files, monkeypatch, case):
    d = cli_files
    patch, argv, words = _cases(d, monkeypatch)[case]
    before = sorted(os.listdir(d))
    patch()
    code, err = _cli(d, ["prune", *argv])
    _assert_one_line(code, err, *words)
    assert sorted(os.listdir(d)) == before and os.listdir(d / "outdir") == []


def test_cli_cases_cover_the_table(tmp_path, monkeypatch):
    assert sorted(_cases(tmp_path, monkeypatch)) == sorted(CLI_CASES)


def test_an_unexpected_bug_keeps_its_traceback(cli_files, monkeypatch):
    monkeypatch.setattr(PRUNE_MODULE, "prune", _raiser(KeyError("a bug")))
    with pytest.raises(KeyError):
        main(["prune", str(cli_files / "m.npz"), "--data", str(cli_files / "S.npy"),
              "--out", str(cli_files / "OUT.npz")])


# --- what the checked readers must still read -------------------------------------------------------
def test_fortran_ordered_and_big_endian_arrays_still_load(tmp_path):
    rng = np.random.default_rng(3)
    W0, W1 = rng.standard_normal((5, 4)), rng.standard_normal((3, 5))
    np.savez(tmp_path / "plain.npz", W0=np.asfortranarray(W0), W1=W1.astype(">f8"), b1=np.zeros(3))
    net = sp.load(tmp_path / "plain.npz", activations=["relu", "identity"])
    np.testing.assert_array_equal(net.layers[0].weight, W0)
    np.testing.assert_array_equal(net.layers[1].weight, W1)
    S = rng.standard_normal((7, 4))
    np.save(tmp_path / "S.npy", np.asfortranarray(S))
    from sparsify.commands._common import load_points
    np.testing.assert_array_equal(load_points(tmp_path / "S.npy"), S)
    np.save(tmp_path / "empty.npy", np.ones((0, 4)))
    assert load_points(tmp_path / "empty.npy").shape == (0, 4)


def test_cli_max_bytes_caps_and_raises_the_limit(cli_files):
    d = cli_files
    total = sum(i.file_size for i in zipfile.ZipFile(d / "m.npz").infolist())
    base = ["prune", d / "m.npz", "--data", d / "S.npy", "--keep", "0.5", "--quiet"]
    code, err = _cli(d, base + ["--max-bytes", total - 1])
    _assert_one_line(code, err, "model", "--max-bytes", str(total))
    assert not (d / "OUT.npz").exists()
    code, err = _cli(d, base + ["--max-bytes", "-5"])
    _assert_one_line(code, err, "--max-bytes")
    code, err = _cli(d, base + ["--max-bytes", total])
    assert code == 0, err
    assert len(sp.load(d / "OUT.npz")) == 2
