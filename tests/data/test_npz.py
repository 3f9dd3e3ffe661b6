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
