"""Protocols that run between peers as pure state machines (``pet``: secure aggregation)."""
