"""bbjax as networked processes (``docs/deploy.md``): the PET coordinator as an HTTP
server with a persistent store (:mod:`bbjax.deploy.pet`), its participants as HTTP clients,
and installed Nodes exchanging signed envelopes over HTTP (:mod:`bbjax.deploy.node`).

Needs the ``deploy`` extra (starlette, uvicorn, httpx); the Redis store needs ``redis``.
"""
