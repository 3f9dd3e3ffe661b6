"""``SecureFedAvgRound``: one FedAvg round whose aggregate the server sees only under PET masks.

The ``self`` class sends the global parameters to the ``client`` class; each client trains
``local_steps`` steps as in :class:`~bbjax.modules.FedAvgRound`, then masks the pair
``(params, mean loss)`` with the scalar ``s = count / max_weight`` (its example count, or
1 with ``weighted=False``) through the ``pet`` slot (:func:`bbjax.components.pet_masking.
pet_masking`, built by :meth:`SecureFedAvgRound.masking`): it gathers the masked limbs and
a ``fits`` flag to the ``server`` and its fresh mask seed with the same flag to the ``sum``
class, the sum participants. ``fits`` is False for a client whose parameters or loss are
not finite, whose count is negative or above ``max_weight``, or whose ``s * value`` leaves
the mask config's bound; such a client is rejected, as FedAvgRound rejects it.

The sum participants see only seeds: they add the masks of the seeds that arrived with
``fits`` (modulo the group orders) and send that mask and the set they used to the server.
The server sees only masked values: it adds the masked models of that set, subtracts the
mask and reads ``sum_j s_j (params_j, loss_j) / sum_j s_j``, the example-weighted FedAvg
mean and mean loss, which it loads. A client whose update or seed did not arrive is in
neither sum. The round keeps the global parameters when the aggregate cannot be unmasked:
no update included, or the sum participants used a seed whose masked model the server did
not admit (a real deployment's lost message; in ``simulate`` a client's messages of a
round are lost together).

Outputs (on the server): ``train_loss`` (the unmasked mean loss, 0 when not unmasked),
``participants`` (clients whose masked update arrived), ``rejected`` (arrived with
``fits`` False), ``included`` (updates in the unmasked aggregate) and ``unmasked`` (int32:
1 when the round loaded the unmasked mean). Slots: ``model``, ``data`` and ``pet``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bbjax._checks import check_count
from bbjax.aggregators.base import check_max_weight, count
from bbjax.components import Component
from bbjax.components.pet_masking import DEFAULT_MASK_CONFIG, pet_masking
from bbjax.dsl import Graph, Module
from bbjax.errors import InvalidArgument
from bbjax.modules.fedavg import train_locally
from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair


class SecureFedAvgRound(Module):
    """FedAvg under PET masking; ``mask_config`` is the pet slot's (:meth:`masking`).
    Weighted averaging needs ``max_weight``: the largest example count a client may report,
    which makes its scalar ``count / max_weight`` at most 1 (the B0 unit bound)."""

    name = "secure_fedavg"

    def __init__(self, local_steps: int = 1, max_weight: float | None = None,
                 weighted: bool = True, num_clients: int | None = None,
                 mask_config: MaskConfigPair | MaskConfig = DEFAULT_MASK_CONFIG):
        self.local_steps = check_count("local_steps", local_steps)
        self.max_weight = check_max_weight("SecureFedAvgRound", max_weight)
        if weighted and self.max_weight is None:
            raise InvalidArgument(
                "SecureFedAvgRound: weighted averaging needs max_weight, the largest example "
                "count a client may report (its PET scalar is count / max_weight)")
        self.weighted = weighted
        self.num_clients = None if num_clients is None else check_count("num_clients",
                                                                        num_clients)
        self.mask_config = mask_config

    def masking(self, params: Any) -> Component:
        """The ``pet`` slot's component for a model whose parameters look like ``params``:
        it masks ``(params, loss)`` under this round's ``mask_config``."""
        return pet_masking((params, jnp.zeros((), jnp.float32)), self.mask_config)

    def body(self, g: Graph) -> None:
        clients, server, sums = g.peers("client", self.num_clients), g.peers("server"), \
            g.peers("sum")
        losses, trigger = train_locally(g, clients, self.local_steps)
        num = (g.slot("data").num_examples(after=trigger).astype(jnp.float32) if self.weighted
               else jnp.float32(1))
        cap = 1.0 if self.max_weight is None else self.max_weight
        local = (g.slot("model").params(), jnp.mean(jnp.stack(losses)))
        masked, seed, fits = g.slot("pet").mask(local, num / cap)
        fits = fits & (num >= 0) & (num <= cap)
        (masked_all, fits_all), arrived = g.gather("masked", (masked, fits), to=server,
                                                   senders=clients)
        (seeds, seed_fits), seed_arrived = g.gather("seed", (seed, fits), to=sums,
                                                    senders=clients)
        used = seed_arrived & seed_fits
        mask_total = g.slot("pet").mask_sum(seeds, used)
        mask_total, used = g.send("mask", (mask_total, used), to=server)
        admitted = arrived & fits_all
        consistent = jnp.all(admitted | ~used)
        used = used & consistent
        total = g.slot("pet").aggregate(masked_all, used)
        (params, loss), _, ok = g.slot("pet").unmask(total, mask_total, count(used))
        current = g.slot("model").params(after=arrived)
        g.slot("model").load_parameters(
            jax.tree.map(lambda new, old: jnp.where(ok, new, old), params, current))
        g.output("train_loss", jnp.where(ok, loss, 0.0))
        g.output("participants", count(arrived))
        g.output("rejected", count(arrived & ~fits_all))
        g.output("included", count(used))
        g.output("unmasked", ok.astype(jnp.int32))
