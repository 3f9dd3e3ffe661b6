"""Federated data: the stacked, padded per-client layout (:class:`FederatedData`), fixed-shape
minibatches of it, partitioners of centralized datasets (:mod:`bbjax.data.partition`), the
FedProx Synthetic(α, β) generator and ``.npz`` files. Nothing is downloaded.

See ``docs/data.md`` for the layout and the exact algorithms.
"""

from bbjax.data import partition
from bbjax.data.batching import Batch, epoch_batches, sample_batch
from bbjax.errors import DataError
from bbjax.data.federated import FederatedData, train_test_split
from bbjax.data.npz import load_npz, save_npz
from bbjax.data.synthetic import synthetic, synthetic_iid

__all__ = [
    "Batch",
    "DataError",
    "FederatedData",
    "epoch_batches",
    "load_npz",
    "partition",
    "sample_batch",
    "save_npz",
    "synthetic",
    "synthetic_iid",
    "train_test_split",
]
