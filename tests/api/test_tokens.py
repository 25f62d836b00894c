"""Bearer tokens: POST /v1/tokens with the password (HTTP Basic, RFC 7617) over TLS or
from loopback, `maild token add|list|revoke`, stored only as hashes, failures under the
login back-off."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.api.conftest import ALICE, BOB, Api, basic, new_token
from tests.conftest import MaildServer


def test_token_by_password_over_tls_and_loopback(api_server: MaildServer) -> None:
    for api in (Api(api_server, tls=True), Api(api_server)):
        resp = api.request("POST", "/v1/tokens", {"name": "phone", "expires_days": 30}, token="",
                           headers={"Authorization": basic(ALICE, "alice-secret")})
        assert resp.status == 201
        made = resp.json
        assert made["token"].startswith("mdt_") and made["name"] == "phone" and made["expires"]
        listed = api.ok("GET", "/v1/tokens", token=made["token"])["tokens"]
        assert made["id"] in [t["id"] for t in listed]
        assert all("token" not in t for t in listed)


def test_wrong_password_missing_or_bad_token(api_server: MaildServer) -> None:
    api = Api(api_server)
    resp = api.request("POST", "/v1/tokens", {}, headers={"Authorization": basic(ALICE, "wrong")})
    assert resp.status == 401 and resp.problem == "bad-credentials" and "Basic" in resp.headers["WWW-Authenticate"]
    resp = api.request("POST", "/v1/tokens", {}, headers={"Authorization": "Basic !!!"})
    assert resp.problem == "bad-request"
    resp = api.get("/v1/folders")
    assert resp.status == 401 and resp.problem == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for token in ("mdt_" + "A" * 43, "nonsense", "mdt_"):
        resp = api.get("/v1/folders", token=token)
        assert resp.status == 401 and resp.problem == "bad-credentials"
    assert "authentication failed: proto=api" in api_server.log()


def test_failures_share_the_login_back_off(api_factory: Callable[..., MaildServer]) -> None:
    server = api_factory(auth={"failure_delay": 0.5, "max_failure_delay": 2.0})
    api = Api(server)
    good = new_token(api)
    for _ in range(3):
        assert api.get("/v1/folders", token="mdt_wrong").status == 401
    started = time.monotonic()
    assert api.get("/v1/folders", token=good).status == 200  # right, but this IP waits first
    assert time.monotonic() - started >= 1.5


def test_revoke_and_expiry(api_server: MaildServer) -> None:
    api = Api(api_server)
    token = new_token(api)
    other = new_token(api)
    token_id = next(t["id"] for t in api.ok("GET", "/v1/tokens", token=token)["tokens"])
    bob = Api(api_server, token=new_token(api, BOB))
    assert bob.request("DELETE", f"/v1/tokens/{token_id}").problem == "not-found"  # not his
    api.ok("DELETE", f"/v1/tokens/{token_id}", token=token, status=204)
    assert api.get("/v1/folders", token=token).status == 401
    assert api.get("/v1/folders", token=other).status == 200
    resp = api.request("POST", "/v1/tokens", {"expires_days": 10_000},
                       headers={"Authorization": basic(ALICE, "alice-secret")})
    assert resp.status == 422 and resp.problem == "invalid-field"


def test_cli_tokens_are_stored_only_as_hashes(api_server: MaildServer) -> None:
    made = api_server.cli("token", "add", ALICE, "--name", "script", "--expires", "2")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("mdt_")
    api = Api(api_server, token=secret)
    assert api.get("/v1/folders").status == 200
    listed = api_server.cli("token", "list", ALICE)
    assert "script" in listed.stdout and secret not in listed.stdout
    data = b"".join(p.read_bytes() for p in api_server.data_dir.rglob("*.mdb"))
    assert secret.encode() not in data and secret[4:].encode() not in data
    token_id = next(line.split()[0] for line in listed.stdout.splitlines() if "script" in line)
    assert api_server.cli("token", "revoke", token_id).returncode == 0
    assert api.get("/v1/folders").status == 401
    assert api_server.cli("token", "revoke", token_id).returncode == 2
    assert api_server.cli("token", "add", "nobody@example.test").returncode == 2
