"""Webhooks: the user's events POSTed to a real HTTP receiver on loopback, signed
(HMAC-SHA256 with the webhook's secret), retried until it answers 2xx; private and
loopback targets refused unless allowed; one user's webhooks see only their events."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api.conftest import ALICE, BOB, Api, new_token
from tests.api.test_folders import deliver
from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = 500 if receiver.fail_first > 0 else 204
                receiver.fail_first -= 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 15.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests"
            time.sleep(0.05)
        return self.requests


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_signed_events_with_retries(api_factory: Callable[..., MaildServer], receiver: Receiver) -> None:
    server = api_factory(api={"webhook_allow_private": True})
    api = Api(server, token="")
    api.token = new_token(api)
    hook = api.ok("POST", "/v1/webhooks", {"url": receiver.url, "events": ["message.new"]}, status=201)
    assert hook["id"].startswith("w") and len(hook["secret"]) > 30
    assert api.ok("GET", "/v1/webhooks")["webhooks"] == [{k: v for k, v in hook.items() if k != "secret"}]
    receiver.fail_first = 2  # answered 500 twice, then 204
    deliver(server, BOB, "not hers")
    deliver(server, ALICE, "for the hook")
    requests = receiver.wait(3)
    time.sleep(0.5)
    assert len(receiver.requests) == 3  # two failures and one success, then nothing more
    bodies = {body for _, body in requests}
    assert len(bodies) == 1  # the same event each time
    headers, body = requests[-1]
    event = json.loads(body)
    assert event["type"] == "message.new" and headers["X-Maild-Position"] == str(event["position"])
    expected = hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Maild-Signature"] == f"sha256={expected}"
    inbox = api.folder("INBOX")
    (message,) = api.ok("GET", f"/v1/folders/{inbox['id']}/messages")["messages"]
    assert event["ids"] == [message["id"]]
    api.ok("PATCH", f"/v1/messages/{message['id']}", {"seen": True})  # not subscribed: no request
    api.ok("DELETE", f"/v1/webhooks/{hook['id']}", status=204)
    deliver(server, ALICE, "after the delete")
    time.sleep(1.0)
    assert len(receiver.requests) == 3


def test_private_targets_and_bad_requests(api_server: MaildServer) -> None:
    api = Api(api_server)
    api.token = new_token(api)
    for url in ("http://127.0.0.1:9/x", "http://10.0.0.1/x", "http://[::1]/x", "ftp://example.test/",
                "http://user:pw@example.test/", "not a url", 5):
        assert api.request("POST", "/v1/webhooks", {"url": url}).problem == "invalid-field", url
    assert api.request("POST", "/v1/webhooks", {"url": "https://hooks.example.test/x", "events": ["nope"]}
                       ).problem == "invalid-field"
    made = api.ok("POST", "/v1/webhooks", {"url": "https://hooks.example.test/x"}, status=201)
    bob = Api(api_server, token=new_token(api, BOB))
    assert bob.ok("GET", "/v1/webhooks") == {"webhooks": []}
    assert bob.request("DELETE", f"/v1/webhooks/{made['id']}").problem == "not-found"
    assert bob.request("DELETE", "/v1/webhooks/..").problem == "not-found"
    assert len(api.ok("GET", "/v1/webhooks")["webhooks"]) == 1


def test_a_name_resolving_to_loopback_is_not_called(api_server: MaildServer, receiver: Receiver,
                                                     dns_zone: DnsZone) -> None:
    dns_zone.set("hooks.example.test", "A", "127.0.0.1")  # through [dns] nameservers
    api = Api(api_server)
    api.token = new_token(api)
    port = receiver.url.split(":")[2].split("/")[0]
    api.ok("POST", "/v1/webhooks", {"url": f"http://hooks.example.test:{port}/hook"}, status=201)
    deliver(api_server, ALICE, "to a private place")
    deadline = time.monotonic() + 10
    while "a private or reserved address: not sent" not in api_server.log():
        assert time.monotonic() < deadline, api_server.log()[-2000:]
        time.sleep(0.1)
    assert receiver.requests == []
