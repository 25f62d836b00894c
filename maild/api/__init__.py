"""The HTTP JSON API front end (docs/api.md): twisted.web on ``[api] listen`` (plain HTTP,
loopback only) and ``tls_listen`` (TLS from ``[tls]``). :mod:`maild.api.server` holds the
routing and the endpoints, :mod:`maild.api.views` the JSON shapes and ids,
:mod:`maild.api.problems` the RFC 9457 errors, and ``openapi.json`` the OpenAPI 3.1
description served at ``/v1/openapi.json``.
"""
