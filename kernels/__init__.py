"""Performance-critical kernels (Pallas for GPU/TPU), each beside its pure-jnp reference.

Each kernel ``f`` comes as ``f_reference`` (pure jnp, any backend), ``f_pallas`` (the
Pallas kernel; ``interpret=True`` runs it anywhere) and ``f``, which picks the Pallas kernel
when ``jax.default_backend()`` is ``"gpu"`` or ``"tpu"`` and the reference otherwise:
``chacha20_blocks`` (ChaCha20 block expansion, :mod:`kernels.chacha20`) and
``modular_sum`` (a limb stack's sum modulo group orders, :mod:`kernels.masked_sum`).
"""

from kernels.chacha20 import (
    chacha20_blocks,
    chacha20_blocks_pallas,
    chacha20_blocks_reference,
)
from kernels.masked_sum import modular_sum, modular_sum_pallas, modular_sum_reference

__all__ = [
    "chacha20_blocks",
    "chacha20_blocks_pallas",
    "chacha20_blocks_reference",
    "modular_sum",
    "modular_sum_pallas",
    "modular_sum_reference",
]
