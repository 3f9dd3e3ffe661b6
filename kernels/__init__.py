"""Performance-critical kernels (Pallas for GPU/TPU), each beside its pure-jnp reference."""
