import pickle
import zipfile

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.data import FederatedData, load_npz, save_npz, synthetic

from bbjax.errors import DataError


def _assert_equal(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=4),
    st.integers(0, 3),
    st.sampled_from([np.float32, np.int16, np.bool_]),
)
def test_round_trip(tmp_path, sizes, extra, dtype):
    rng = np.random.default_rng(sum(sizes))
    xs = [rng.integers(0, 2, (n, 2, 3)).astype(dtype) for n in sizes]
    ys = [rng.integers(0, 9, (n,)).astype(np.int32) for n in sizes]
    data = FederatedData.from_clients(xs, ys, pad_to=max(sizes) + extra)
    path = tmp_path / "data.npz"
    save_npz(path, data)
    _assert_equal(load_npz(path), data)


def test_round_trip_of_device_arrays(tmp_path):
    data = synthetic(1.0, 1.0, 4, 0, num_features=5)
    save_npz(tmp_path / "s.npz", jax.device_put(data))
    _assert_equal(load_npz(tmp_path / "s.npz"), data)
    save_npz(str(tmp_path / "no_suffix"), data)  # the name is used as given
    _assert_equal(load_npz(tmp_path / "no_suffix"), data)


def test_client_ids_layout(tmp_path):
    x = np.arange(7, dtype=np.float32)[:, None]
    ids = np.array([30, 4, 30, 4, 9, 30, 9])
    data = load_npz(_write(tmp_path / "f.npz", x=x, y=x[:, 0] * 2, client_ids=ids))
    np.testing.assert_array_equal(data.sizes, [2, 2, 3])  # ids 4, 9, 30 in that order
    np.testing.assert_array_equal(data.client(0)[0][:, 0], [1, 3])
    np.testing.assert_array_equal(data.client(1)[0][:, 0], [4, 6])
    np.testing.assert_array_equal(data.client(2)[0][:, 0], [0, 2, 5])
    np.testing.assert_array_equal(data.client(2)[1], [0, 4, 10])


def test_per_client_layout(tmp_path):
    arrays = {"x_0": np.ones((2, 3)), "y_0": np.zeros(2, np.int8), "x_1": np.zeros((0, 3)),
              "y_1": np.zeros(0, np.int8), "x_2": np.full((4, 3), 2.0), "y_2": np.ones(4, np.int8)}
    data = load_npz(_write(tmp_path / "p.npz", **arrays))
    np.testing.assert_array_equal(data.sizes, [2, 0, 4])
    assert data.x.shape == (3, 4, 3) and data.y.dtype == np.int8
    for i in range(3):
        np.testing.assert_array_equal(data.client(i)[0], arrays[f"x_{i}"])


X, Y = np.zeros((5, 2), np.float32), np.zeros(5, np.int32)

MALFORMED = [
    # canonical "sizes" layout
    (dict(x=X, sizes=[5]), "'y' is missing"),
    (dict(y=Y, sizes=[5]), "'x' is missing"),
    (dict(x=X, y=Y[:4], sizes=[5]), "'y'"),
    (dict(x=X, y=Y, sizes=[2, 2]), "'sizes'"),
    (dict(x=X, y=Y, sizes=[6, -1]), "'sizes'"),
    (dict(x=X, y=Y, sizes=np.array([5.0])), "'sizes'"),
    (dict(x=X, y=Y, sizes=[[5]]), "'sizes'"),
    (dict(x=X, y=Y, sizes=np.zeros(0, int)), "'sizes'"),
    (dict(x=X, y=Y, sizes=[5], max_size=4), "'max_size'"),
    (dict(x=X, y=Y, sizes=[5], max_size=[5]), "'max_size'"),
    (dict(x=X, y=Y, sizes=[5], extra=X), "'extra'"),
    (dict(x=X, y=Y, sizes=[5], client_ids=np.zeros(5, int)), "'client_ids'"),
    (dict(x=np.array(["a"] * 5), y=Y, sizes=[5]), "'x'"),
    (dict(x=X, y=np.array([b"a"] * 5), sizes=[5]), "'y'"),
    (dict(x=np.float32(1), y=Y, sizes=[5]), "'x'"),
    (dict(x=np.array([{}] * 5, dtype=object), y=Y, sizes=[5]), "'x'"),
    # "client_ids" layout
    (dict(x=X, y=Y, client_ids=np.zeros(4, int)), "'client_ids'"),
    (dict(x=X, y=Y, client_ids=np.zeros(5)), "'client_ids'"),
    (dict(x=X[:0], y=Y[:0], client_ids=np.zeros(0, int)), "'x' has no rows"),
    (dict(x=X, y=Y, client_ids=np.zeros(5, int), weights=Y), "'weights'"),
    (dict(x=X, client_ids=np.zeros(5, int)), "'y' is missing"),
    # per-client layout
    (dict(x_0=X, y_0=Y, x_1=X), "'y_1' is missing"),
    (dict(x_0=X, y_0=Y, x_2=X, y_2=Y), "'x_1' is missing"),
    (dict(x_0=X, y_0=Y, x_01=X), "'x_01'"),
    (dict(x_0=X, y_0=Y, z=X), "'z'"),
    (dict(x_0=X, y_0=Y, x_1=X[:, :1], y_1=Y), "'x_1'"),
    (dict(x_0=X, y_0=Y, x_1=X, y_1=Y.astype(np.int64)), "'y_1'"),
    (dict(x_0=X, y_0=Y[:3]), "'y_0'"),
    (dict(x_0=np.array(["a"]), y_0=Y[:1]), "'x_0'"),
    # no layout
    (dict(features=X, labels=Y), "no known layout"),
]


@pytest.mark.parametrize("arrays,message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_files_name_the_array(tmp_path, arrays, message):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(path)


def test_files_that_are_not_npz_archives(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_bytes(b"not an archive at all")
    np.save(tmp_path / "single.npy", X)
    for name in ("empty.npz", "text.npz", "single.npy"):
        with pytest.raises(DataError, match=name):
            load_npz(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_corrupted_array_is_named(tmp_path):
    path = _write(tmp_path / "c.npz", x=np.arange(64, dtype=np.float32), y=np.zeros(64, int),
                  sizes=[64])
    raw = bytearray(path.read_bytes())
    at = raw.index(np.arange(64, dtype=np.float32).tobytes())  # x's data, stored uncompressed
    raw[at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="'x'"):
        load_npz(path)


# -- the archive itself: checked before anything is allocated ------------------------------


def _npy(header: dict | None = None, data: bytes = b"", *, raw_header: bytes | None = None,
         version: bytes = b"\x01\x00") -> bytes:
    """An .npy member: numpy's magic, ``version``, a header (a dict written as numpy writes it,
    or ``raw_header``) and ``data``."""
    if raw_header is None:
        raw_header = repr(header).encode("latin1") + b"\n"
    length = len(raw_header).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return np.lib.format.MAGIC_PREFIX + version + length + raw_header + data


def _members(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def _header(descr="<f4", shape=(5, 2), fortran_order=False):
    return {"descr": descr, "fortran_order": fortran_order, "shape": shape}


Y_NPY = ("y.npy", _npy(_header("<i4", (5,)), Y.tobytes()))
SIZES_NPY = ("sizes.npy", _npy(_header("<i8", (1,)), np.int64(5).tobytes()))

BAD_MEMBERS = [
    ("x.npy", _npy(_header(shape=(10**13,)), X.tobytes()), "declares shape \\(10000000000000,\\)"),
    ("x.npy", _npy(_header(shape=(5, 2)), X.tobytes()[:-4]), "holds 36 bytes"),
    ("x.npy", _npy(_header("<f8", (5, 2)), X.tobytes()), "of float64 \\(80 bytes\\)"),
    ("x.npy", _npy(_header("|O", (5,)), pickle.dumps([{}] * 5)), "pickled arrays are refused"),
    ("x.npy", _npy(_header("<q9")), "invalid .npy dtype"),
    ("x.npy", _npy(_header("|V0", (5,))), "no fixed scalar element size"),
    ("x.npy", _npy(_header(shape=(5, -2))), "tuple of integers >= 0"),
    ("x.npy", _npy(_header(shape=[5, 2]), X.tobytes()), "tuple of integers >= 0"),
    ("x.npy", _npy(_header(fortran_order=0), X.tobytes()), "fortran_order must be a bool"),
    ("x.npy", _npy({"descr": "<f4", "shape": (5, 2)}, X.tobytes()), "must be a dict of"),
    ("x.npy", _npy(raw_header=b"{'descr': '<f4', " + X.tobytes()), "unreadable .npy header"),
    ("x.npy", _npy(raw_header=b" " * 10_001), "header of 10001 bytes"),
    ("x.npy", _npy(_header(), X.tobytes(), version=b"\x09\x00"), "unknown .npy format version 9.0"),
    ("x.npy", X.tobytes(), "no .npy signature"),
    ("x.npy", np.lib.format.MAGIC_PREFIX + b"\x01\x00\xff", "truncated .npy header"),
    ("x.txt", b"notes", "member 'x.txt'\\) is not an .npy array"),
]


@pytest.mark.parametrize("member,data,message", BAD_MEMBERS, ids=[m for *_, m in BAD_MEMBERS])
def test_bad_members_are_refused_naming_file_and_member(tmp_path, member, data, message):
    path = _members(tmp_path / "bad.npz", [(member, data), Y_NPY, SIZES_NPY])
    with pytest.raises(DataError, match=message) as info:
        load_npz(path)
    assert "bad.npz" in str(info.value) and f"member {member!r}" in str(info.value)


def test_duplicate_member_is_refused(tmp_path):
    x = ("x.npy", _npy(_header(), X.tobytes()))
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _members(tmp_path / "d.npz", [x, Y_NPY, SIZES_NPY, x])
    with pytest.raises(DataError, match="'x.npy'\\) appears twice"):
        load_npz(path)


def _valid(path, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, x=X, y=Y, sizes=[5])
    return path


def test_every_truncation_is_refused(tmp_path):
    raw = _valid(tmp_path / "v.npz").read_bytes()
    path = tmp_path / "t.npz"
    for end in range(len(raw)):
        path.write_bytes(raw[:end])
        with pytest.raises(DataError, match="t.npz"):
            load_npz(path)


def _patched(raw: bytes, signature: bytes, offset: int, value: bytes) -> bytes:
    """``raw`` with ``value`` written ``offset`` bytes into every record starting ``signature``."""
    out, at = bytearray(raw), raw.find(signature)
    while at >= 0:
        out[at + offset:at + offset + len(value)] = value
        at = raw.find(signature, at + 1)
    return bytes(out)


@pytest.mark.parametrize("offset,value,message", [
    (10, (99).to_bytes(2, "little"), "NotImplementedError"),  # unknown compression method
    (8, (1).to_bytes(2, "little"), "encrypted"),              # the encryption flag
    (42, (2**31).to_bytes(4, "little"), "'x.npy'"),            # a local header past the end
], ids=["compression method", "encryption flag", "local header offset"])
def test_corrupted_directory_entries_are_refused(tmp_path, offset, value, message):
    raw = _valid(tmp_path / "v.npz").read_bytes()
    path = tmp_path / "c.npz"
    path.write_bytes(_patched(raw, b"PK\x01\x02", offset, value))
    with pytest.raises(DataError, match=message):
        load_npz(path)


def test_a_member_the_directory_lost_is_noticed(tmp_path):
    raw = _valid(tmp_path / "v.npz").read_bytes()
    path = tmp_path / "c.npz"
    path.write_bytes(_patched(raw, b"PK\x05\x06", 10, (4).to_bytes(2, "little")))
    with pytest.raises(DataError, match="declares 4 members but its directory lists 3"):
        load_npz(path)


def test_max_bytes_caps_all_arrays_together(tmp_path):
    path = _valid(tmp_path / "v.npz")
    total = X.nbytes + Y.nbytes + 8
    assert load_npz(path, max_bytes=total).x.shape == (1, 5, 2)
    with pytest.raises(DataError, match=f"exceed max_bytes={total - 1}"):
        load_npz(path, max_bytes=total - 1)
    with pytest.raises(DataError, match="'x'.* exceed max_bytes=39"):
        load_npz(path, max_bytes=39)
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(DataError, match="max_bytes"):
            load_npz(path, max_bytes=bad)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("compressed", [False, True])
def test_arrays_read_as_numpy_reads_them(tmp_path, version, compressed):
    rng = np.random.default_rng(0)
    arrays = {"x": np.asfortranarray(rng.standard_normal((6, 3, 2))).astype(">f8"),
              "y": rng.integers(0, 2, 6).astype(bool), "sizes": np.array([4, 2], ">i2"),
              "max_size": np.uint8(5)}
    path = tmp_path / "v.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) \
            as archive:
        for name, a in arrays.items():
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, a, version=version)
    want = np.load(path)
    data = load_npz(path)
    x, y = want["x"], want["y"]
    expected = FederatedData.from_clients([x[:4], x[4:]], [y[:4], y[4:]], pad_to=5)
    _assert_equal(data, expected)
