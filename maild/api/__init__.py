"""The HTTP JSON API front end (docs/api.md): twisted.web on ``[api] listen`` (plain HTTP,
loopback only) and ``tls_listen`` (TLS from ``[tls]``).

- :mod:`maild.api.server` — the Site, routing, authentication, limits and the /v1 endpoints;
- :mod:`maild.api.views` — the JSON shapes, the ids, and the message a send composes;
- :mod:`maild.api.problems` — the RFC 9457 errors and their stable types;
- :mod:`maild.api.events` — push: change-log records as events, WebSocket and long poll;
- :mod:`maild.api.changes` — how the events read the change log (one small object);
- :mod:`maild.api.webhooks` — the same events POSTed to the users' URLs;
- ``openapi.json`` — the OpenAPI 3.1 description, served at ``/v1/openapi.json``.
"""
