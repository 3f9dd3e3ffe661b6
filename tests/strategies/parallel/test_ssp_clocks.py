"""The SSP clock components on random delays and staleness bounds (hypothesis): the
fastest worker never gets more than τ + 1 clocks ahead of the slowest, no pull lags by more
than τ, the server counts every push in clock order, and the slowest clock keeps moving. Driven without a simulation: ``tick`` vmapped over workers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.strategies.parallel import ssp_server, ssp_worker

WORKERS, ROUNDS, MAX_DELAY = 4, 24, 3


@functools.cache
def driver(staleness: int):
    """``ROUNDS`` rounds of the clocks as one jitted function of the delays."""
    worker, server = ssp_worker(staleness), ssp_server(WORKERS, 8)

    @jax.jit
    def run(delays):
        clocks = jax.vmap(worker.init)(jax.random.split(jax.random.key(0), WORKERS), delays)
        books = server.init(None)

        def one_round(carry, _):
            clocks, books = carry
            _, (version, slowest, _) = server.call("read", books)
            clocks, (pull, push, iteration, lag, _) = jax.vmap(
                lambda c: worker.call("tick", c, slowest, version))(clocks)
            books, _ = server.call("record", books, push)
            return (clocks, books), (pull, push, iteration, lag, books.clocks)

        return jax.lax.scan(one_round, (clocks, books), None, ROUNDS)[1]

    return run


def drive(staleness: int, delays: np.ndarray):
    return jax.tree.map(np.asarray, driver(staleness)(jnp.asarray(delays, jnp.int32)))


@settings(max_examples=25, deadline=None)
@given(staleness=st.integers(0, 3),
       delays=st.lists(st.integers(0, MAX_DELAY), min_size=WORKERS, max_size=WORKERS))
def test_ssp_clocks_keep_the_bound_and_make_progress(staleness, delays):
    pull, push, iteration, lag, clocks = drive(staleness, np.array(delays))
    assert (clocks.max(1) - clocks.min(1) <= staleness + 1).all()
    assert (lag[pull] <= staleness).all() and (lag >= 0).all()
    pushed = np.cumsum(push, 0)
    np.testing.assert_array_equal(pushed, clocks)           # the server counts every push
    np.testing.assert_array_equal(iteration[push], (pushed - 1)[push])   # in clock order
    # the slowest workers may always start (they lag by 0), so the slowest clock moves on
    # at least every MAX_DELAY + 1 rounds
    assert clocks[-1].min() >= ROUNDS // (MAX_DELAY + 1)
    if staleness == 0:  # BSP: the workers' clocks differ by at most the one in flight
        np.testing.assert_array_equal(lag, 0)
    if not any(delays):
        np.testing.assert_array_equal(push, True)   # no delays: every worker every round
