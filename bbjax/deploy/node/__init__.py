"""Installed Nodes as networked processes: Ed25519 identities, a peer list, signed and
chunked frames over HTTP, and a persisted ``NodeState`` (``docs/deploy.md``)."""
