"""xaynet's PET secure-aggregation protocol: exact masking, sortition, messages, and the
coordinator and participant as sans-IO state machines (``docs/pet.md``)."""
