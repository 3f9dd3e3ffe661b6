"""Keys of the ``metadata_props`` bbjax writes on exported models."""

IN_TREE = "bbjax.in_tree"
OUT_TREE = "bbjax.out_tree"
IN_KEYS = "bbjax.in_keys"      # JSON [[leaf_index, prng_impl_name], ...]: inputs that are typed PRNG keys
OUT_KEYS = "bbjax.out_keys"
EXPORTER = "bbjax.exporter"


def read(model) -> dict[str, str]:
    """The model's metadata as a dict."""
    return {p.key: p.value for p in model.metadata_props}
