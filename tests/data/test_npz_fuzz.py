"""Corrupted ``.npz`` files: ``load_npz`` gives the original data or a DataError, nothing else."""

from __future__ import annotations

import io

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.data import FederatedData, load_npz
from bbjax.errors import DataError

_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((9, 3)).astype(np.float32)
_Y = _RNG.integers(0, 5, 9).astype(np.int32)
# The data both archives hold, built without any file: clients of 4, 0 and 5 rows, padded to 6.
EXPECTED = FederatedData.from_clients([_X[:4], _X[4:4], _X[4:]], [_Y[:4], _Y[4:4], _Y[4:]],
                                      pad_to=6)


def _archive(save) -> bytes:
    buffer = io.BytesIO()
    save(buffer, x=_X, y=_Y, sizes=np.array([4, 0, 5]), max_size=np.int64(6))
    return buffer.getvalue()


ARCHIVES = [_archive(np.savez), _archive(np.savez_compressed)]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _structure(raw: bytes) -> list[int]:
    """Offsets of the bytes that zip records and .npy headers are made of (the 46 bytes
    after each zip signature, the 128 after each .npy magic): where flips do the most."""
    starts = [i for i in range(len(raw)) if raw.startswith(b"PK", i)]
    npy = [i for i in range(len(raw)) if raw.startswith(np.lib.format.MAGIC_PREFIX, i)]
    return sorted({j for i in starts for j in range(i, min(i + 46, len(raw)))}
                  | {j for i in npy for j in range(i, min(i + 128, len(raw)))})


def _flips(raw: bytes) -> st.SearchStrategy[bytes]:
    def flip(bits: list[int]) -> bytes:
        out = bytearray(raw)
        for bit in bits:
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    anywhere = st.integers(0, 8 * len(raw) - 1)
    structural = st.tuples(st.sampled_from(_structure(raw)), st.integers(0, 7)).map(
        lambda at_bit: 8 * at_bit[0] + at_bit[1])
    return st.lists(st.one_of(anywhere, structural), min_size=1, max_size=8).map(flip)


def _overwrites(raw: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(raw) - 1), st.binary(min_size=1, max_size=16)).map(
        lambda at_data: raw[:at_data[0]] + at_data[1] + raw[at_data[0] + len(at_data[1]):])


def _truncations(raw: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, len(raw) - 1).map(lambda end: raw[:end])


CORRUPTED = st.sampled_from(ARCHIVES).flatmap(
    lambda raw: st.one_of(_flips(raw), _overwrites(raw), _truncations(raw)))
RANDOM = st.one_of(st.binary(max_size=2048),
                   st.binary(max_size=2048).map(lambda b: b"PK\x03\x04" + b),
                   st.binary(max_size=2048).map(lambda b: b + ARCHIVES[0][-22:]))


def _assert_expected(data: FederatedData) -> None:
    for got, want in zip(jax.tree.leaves(data), jax.tree.leaves(EXPECTED), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def _loads_or_refuses(path, raw: bytes) -> None:
    path.write_bytes(raw)
    try:
        data = load_npz(path)
    except DataError as e:
        assert path.name in str(e)
        return
    _assert_expected(data)


def test_the_pristine_archives_load(tmp_path):
    assert ARCHIVES[0] != ARCHIVES[1]  # stored and deflated
    for raw in ARCHIVES:
        (tmp_path / "v.npz").write_bytes(raw)
        _assert_expected(load_npz(tmp_path / "v.npz"))


@FUZZ
@given(raw=CORRUPTED)
def test_corrupted_archives_load_correctly_or_raise_data_error(tmp_path, raw):
    _loads_or_refuses(tmp_path / "fuzz.npz", raw)


@FUZZ
@given(raw=RANDOM)
def test_random_bytes_raise_data_error(tmp_path, raw):
    _loads_or_refuses(tmp_path / "fuzz.npz", raw)
