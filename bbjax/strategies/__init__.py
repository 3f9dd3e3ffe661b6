"""Training strategies: what a run does with its peers (``decentralized``: topologies and
gossip-style algorithms)."""
