"""HTTP API test helpers: a real `maild serve` with [api] listeners, a small JSON client
over http.client (plain on loopback, or TLS), and a token made through POST /v1/tokens."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import USERS, MaildServer
from tests.fixtures.ports import free_port

TIMEOUT = 60.0  # socket timeout; the 25 MB send on a loaded machine takes a while
ALICE, BOB = "alice@example.test", "bob@example.test"


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def problem(self) -> str:
        """The RFC 9457 problem type's last part, e.g. "not-found"."""
        assert self.headers["Content-Type"] == "application/problem+json", (self.status, self.body[:300])
        doc = self.json
        assert doc["status"] == self.status
        return str(doc["type"]).removeprefix("urn:maild:problem:")


class Api:
    def __init__(self, server: MaildServer, token: str | None = None, tls: bool = False) -> None:
        self.server = server
        self.token = token
        self.tls = tls

    def connect(self) -> http.client.HTTPConnection:
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.server.cafile))
            context.check_hostname = False
            return http.client.HTTPSConnection("127.0.0.1", self.server.ports["api_tls"], timeout=TIMEOUT,
                                               context=context)
        return http.client.HTTPConnection("127.0.0.1", self.server.ports["api"], timeout=TIMEOUT)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                token: str | None = None) -> Response:
        headers = dict(headers or {})
        token = token if token is not None else self.token
        if token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = self.connect()
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered (413) and closed before the whole body was sent: read the answer
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        resp = self.request(method, path, body, **kw)
        assert resp.status == status, (resp.status, resp.body[:500])
        return resp.json if resp.body else None

    def folder(self, name: str) -> dict[str, Any]:
        return next(f for f in self.ok("GET", "/v1/folders")["folders"] if f["name"] == name)


def basic(address: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()


def new_token(api: Api, address: str = ALICE) -> str:
    resp = api.request("POST", "/v1/tokens", {"name": "tests"}, token="",
                       headers={"Authorization": basic(address, USERS[address])})
    assert resp.status == 201, resp.body
    return str(resp.json["token"])


@pytest.fixture
def api_factory(maild_factory: Callable[..., MaildServer]) -> Callable[..., MaildServer]:
    def make(**overrides: Any) -> MaildServer:
        plain, secure = free_port(), free_port()
        api = {"listen": [f"127.0.0.1:{plain}"], "tls_listen": [f"127.0.0.1:{secure}"]}
        api.update(overrides.pop("api", {}))
        server = maild_factory(api=api, **overrides)
        server.ports["api"], server.ports["api_tls"] = plain, secure
        return server
    return make


@pytest.fixture
def api_server(api_factory: Callable[..., MaildServer]) -> MaildServer:
    return api_factory()


@pytest.fixture
def alice(api_server: MaildServer) -> Api:
    api = Api(api_server)
    api.token = new_token(api, ALICE)
    return api


@pytest.fixture
def bob(api_server: MaildServer, alice: Api) -> Api:
    api = Api(api_server)
    api.token = new_token(api, BOB)
    return api
