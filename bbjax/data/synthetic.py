"""The FedProx Synthetic(α, β) federated dataset (Li et al. 2020, "Federated Optimization in
Heterogeneous Networks", Section 5.1), generated in memory: no download.

This follows the authors' scripts (``data/synthetic_*/generate_synthetic.py`` and
``data/synthetic_iid/generate_iid.py`` in github.com/litian96/FedProx), draw for draw from
a legacy ``np.random.RandomState(seed)``: with ``max_size=None`` the per-client arrays equal
theirs after ``np.random.seed(seed)`` (features cast to float32). For client ``k``, with
``d = num_features``, ``K = num_classes`` and ``Σ = diag(j^-1.2 for j = 1..d)``:

- size ``n_k = floor(LogNormal(4, 2)) + 50`` (a power law with a floor of 50 examples);
- non-IID: ``u_k ~ N(0, α²)``, ``B_k ~ N(0, β²)``, ``v_k ~ N(B_k, I_d)``,
  ``W_k ~ N(u_k, 1)`` elementwise ``[d, K]``, ``b_k ~ N(u_k, 1)`` elementwise ``[K]``;
- IID: one ``W ~ N(0, 1)``, ``b ~ N(0, 1)`` for all clients and ``v_k = 0``;
- examples ``x ~ N(v_k, Σ)`` and labels ``y = argmax(softmax(x W_k + b_k)) = argmax(x W_k + b_k)``.

α and β are standard deviations, as in the authors' code. Deviation: the argmax is taken
over the logits, where their script's softmax overflows to NaN for logits beyond ~709.
The paper uses 30 clients and a per-client 90/10 train/test split
(:func:`bbjax.data.train_test_split` with ``test_fraction=0.1``).
"""

from __future__ import annotations

import numbers

import numpy as np

from bbjax.errors import DataError
from bbjax._checks import check_count, check_nonnegative
from bbjax.data.federated import FederatedData


def synthetic(
    alpha: float,
    beta: float,
    num_clients: int = 30,
    seed: int = 0,
    *,
    num_features: int = 60,
    num_classes: int = 10,
    max_size: int | None = None,
) -> FederatedData:
    """Synthetic(α, β): ``alpha`` sets how much the clients' models differ, ``beta`` how
    much their feature distributions differ (see the module docstring for the formulas).

    ``x``: float32 ``[num_clients, max n_k, num_features]``; ``y``: int32 class labels.
    ``max_size`` caps each client's size (a deviation from the paper that bounds the
    padding). Raises :class:`DataError` naming an invalid argument.
    """
    alpha = check_nonnegative("alpha", alpha, error=DataError)
    beta = check_nonnegative("beta", beta, error=DataError)
    rs, sizes, d, k = _start(num_clients, seed, num_features, num_classes, max_size)
    u = rs.normal(0, alpha, len(sizes))
    b_mean = rs.normal(0, beta, len(sizes))
    v = [rs.normal(b_mean[i], 1, d) for i in range(len(sizes))]
    factor = _covariance_factor(d)
    models = []
    for i, n in enumerate(sizes):
        w = rs.normal(u[i], 1, (d, k))
        b = rs.normal(u[i], 1, k)
        models.append((w, b, rs.standard_normal((n, d)) @ factor + v[i]))
    return _label(models)


def synthetic_iid(
    num_clients: int = 30,
    seed: int = 0,
    *,
    num_features: int = 60,
    num_classes: int = 10,
    max_size: int | None = None,
) -> FederatedData:
    """Synthetic IID: every client draws ``x ~ N(0, Σ)`` and labels it with one shared
    model ``(W, b)``; client sizes as in :func:`synthetic`."""
    rs, sizes, d, k = _start(num_clients, seed, num_features, num_classes, max_size)
    w = rs.normal(0, 1, (d, k))
    b = rs.normal(0, 1, k)
    factor = _covariance_factor(d)
    return _label([(w, b, rs.standard_normal((n, d)) @ factor) for n in sizes])


def _start(
    num_clients: int, seed: int, num_features: int, num_classes: int, max_size: int | None
) -> tuple[np.random.RandomState, np.ndarray, int, int]:
    """The generator and the client sizes, the first draws of both variants."""
    num_clients = check_count("num_clients", num_clients, error=DataError)
    d = check_count("num_features", num_features, error=DataError)
    k = check_count("num_classes", num_classes, error=DataError)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (
        0 <= seed < 2**32
    ):
        raise DataError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    cap = None if max_size is None else check_count("max_size", max_size, error=DataError)
    rs = np.random.RandomState(int(seed))
    sizes = rs.lognormal(4, 2, num_clients).astype(np.int64) + 50
    return rs, sizes if cap is None else np.minimum(sizes, cap), d, k


def _covariance_factor(d: int) -> np.ndarray:
    """``F`` with ``x = z F + v``, ``z ~ N(0, I)``: the factor that
    ``RandomState.multivariate_normal`` builds from the SVD of ``Σ``, computed once for all
    clients; the draws stay identical."""
    _, s, vt = np.linalg.svd(np.diag(np.power(np.arange(1, d + 1), -1.2)))
    return np.sqrt(s)[:, None] * vt


def _label(models: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> FederatedData:
    xs = [x.astype(np.float32) for _, _, x in models]
    ys = [np.argmax(x @ w + b, axis=1).astype(np.int32) for w, b, x in models]
    return FederatedData.from_clients(xs, ys)
