"""The PET coordinator as an HTTP server with a persistent store, and PET participants as
HTTP clients (``docs/deploy.md``)."""
