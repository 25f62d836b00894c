"""The HTTP layer: routing answers, RFC 9457 problems, rate limits (429 + Retry-After),
CORS off by default and on for configured origins, plain HTTP refused off loopback, idle
connections closed, and the store checked with fsck at the end (the fixture)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from maild import config as configmod
from tests.api.conftest import Api, new_token
from tests.conftest import MaildServer


def test_routes_and_problems(alice: Api) -> None:
    resp = alice.get("/v1/nothing")
    assert resp.status == 404 and resp.problem == "not-found"
    resp = alice.request("PUT", "/v1/folders")
    assert resp.status == 405 and resp.problem == "method-not-allowed"
    resp = alice.get("/v1/openapi.json", token="")
    assert resp.status == 200 and resp.json["openapi"].startswith("3.1")
    assert alice.get("/v1/folders").headers["Cache-Control"] == "no-store"


def test_rate_limits(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(api={"requests_per_minute_per_token": 5, "requests_per_minute_per_ip": 0})
    api = Api(server)
    api.token = new_token(api)
    statuses = [api.get("/v1/folders") for _ in range(7)]
    assert [r.status for r in statuses][:5] == [200] * 5
    limited = statuses[-1]
    assert limited.status == 429 and limited.problem == "rate-limited" and int(limited.headers["Retry-After"]) >= 1
    other = new_token(api)  # another token has its own bucket
    assert api.get("/v1/folders", token=other).status == 200


def test_rate_limit_per_ip(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(api={"requests_per_minute_per_ip": 3})
    api = Api(server)
    assert [api.get("/v1/openapi.json").status for _ in range(4)] == [200, 200, 200, 429]


def test_cors(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(api={"cors_origins": ["https://app.example.test"]})
    api = Api(server)
    api.token = new_token(api)
    allowed = api.get("/v1/folders", headers={"Origin": "https://app.example.test"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.test"
    other = api.get("/v1/folders", headers={"Origin": "https://evil.example"})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers
    preflight = api.request("OPTIONS", "/v1/folders", headers={"Origin": "https://app.example.test",
                                                                "Access-Control-Request-Method": "PATCH"})
    assert preflight.status == 204 and "PATCH" in preflight.headers["Access-Control-Allow-Methods"]


def test_cors_off_by_default(alice: Api) -> None:
    resp = alice.get("/v1/folders", headers={"Origin": "https://app.example.test"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_plain_http_only_on_loopback(tmp_path: object) -> None:
    try:
        configmod.from_dict({"hostname": "h", "data_dir": "d", "api": {"listen": ["0.0.0.0:8080"]}},
                            configmod.Path("x.toml"))
    except configmod.ConfigError as exc:
        assert any(e.startswith("api.listen[0]: plain HTTP only on a loopback address") for e in exc.errors)
    else:
        raise AssertionError("a non-loopback plain listener was accepted")


def test_idle_connection_closed(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(api={"request_timeout": 1.0})
    with socket.create_connection(("127.0.0.1", server.ports["api"]), timeout=10) as sock:
        sock.sendall(b"GET /v1/folders HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        started = time.monotonic()
        while sock.recv(4096):
            pass
        assert time.monotonic() - started < 5


def test_connection_limit_per_ip(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(api={"max_connections_per_ip": 2})
    held = [socket.create_connection(("127.0.0.1", server.ports["api"]), timeout=10) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", server.ports["api"]), timeout=10) as third:
            try:
                third.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                assert third.recv(100) == b""  # closed at accept, unanswered
            except ConnectionResetError:
                pass
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert Api(server).get("/v1/openapi.json").status == 200  # slots given back


def test_json_body_over_the_limit(alice: Api) -> None:
    resp = alice.request("POST", "/v1/folders", b'{"name": "' + b"x" * (2 << 20) + b'"}',
                         {"Content-Type": "application/json"})
    assert resp.status == 413 and resp.problem == "too-large"
    assert "x" * 100 not in str(alice.ok("GET", "/v1/folders"))
