"""Differential privacy: clipping, the Gaussian mechanism (central, adaptive-clipping and
local) and an RDP accountant for the sampled Gaussian mechanism. ``clip``,
``gaussian_noise``, ``adaptive_clipping`` and ``LocalDP.algorithm`` are algorithms on the
``bbjax.algorithms`` contract; ``CentralDP`` runs them.

See ``docs/privacy_and_compression.md`` for the noise scale of every mechanism.
"""

from bbjax.privacy.accounting import Accountant, PrivacySpent, sampled_gaussian_accountant
from bbjax.privacy.adaptive_clipping import (
    ClippedUpdate,
    adaptive_clipping,
    client_side_adaptive_clipping,
    geometric_update,
    server_side_adaptive_clipping,
    update_noise_multiplier,
)
from bbjax.privacy.clipping import (
    CentralDP,
    DPState,
    client_side_fixed_clipping,
    clip,
    clip_by_global_norm,
    global_norm,
    server_side_fixed_clipping,
)
from bbjax.errors import PrivacyError
from bbjax.privacy.gaussian import (
    add_gaussian_noise,
    analytic_gaussian_stddev,
    central_noise_stddev,
    classic_gaussian_stddev,
    gaussian_delta,
    gaussian_noise,
    noised_mean,
)
from bbjax.privacy.local_dp import LocalDP, local_gaussian

__all__ = [
    "Accountant",
    "CentralDP",
    "ClippedUpdate",
    "DPState",
    "LocalDP",
    "PrivacyError",
    "PrivacySpent",
    "adaptive_clipping",
    "add_gaussian_noise",
    "analytic_gaussian_stddev",
    "central_noise_stddev",
    "classic_gaussian_stddev",
    "client_side_adaptive_clipping",
    "client_side_fixed_clipping",
    "clip",
    "clip_by_global_norm",
    "gaussian_delta",
    "gaussian_noise",
    "geometric_update",
    "global_norm",
    "local_gaussian",
    "noised_mean",
    "sampled_gaussian_accountant",
    "server_side_adaptive_clipping",
    "server_side_fixed_clipping",
    "update_noise_multiplier",
]
