"""Push: GET /v1/events as a WebSocket and as a long poll, from the change log. A message
delivered over SMTP arrives as an event within a second; a client reconnecting with its
last position gets exactly what it missed; a position the log no longer reaches gets a
resync; only the user's own changes are sent."""

from __future__ import annotations

import smtplib
import threading
import time

from tests.api.conftest import ALICE, BOB, Api
from tests.api.test_folders import deliver
from tests.api.wsclient import WebSocket
from tests.imap.conftest import tls_context


def connect(api: Api, query: str = "", tls: bool = False) -> WebSocket:
    port = api.server.ports["api_tls" if tls else "api"]
    ws = WebSocket("127.0.0.1", port, f"/v1/events{query}", api.token or "",
                   tls_context(api.server.cafile) if tls else None)
    assert ws.status == 101, ws.head
    return ws


def test_smtp_delivery_arrives_within_a_second(alice: Api, bob: Api) -> None:
    ws = connect(alice, tls=True)
    ready = ws.receive()
    assert ready["type"] == "ready"
    deliver(alice.server, BOB, "for bob")  # not hers: no event
    with smtplib.SMTP(alice.server.host, alice.server.ports["smtp"], timeout=30) as client:
        client.sendmail("carol@remote.test", [ALICE], b"From: carol@remote.test\r\nSubject: hi\r\n\r\nHi\r\n")
        accepted = time.monotonic()
    event = ws.receive()
    assert time.monotonic() - accepted < 1.0
    inbox = alice.folder("INBOX")
    assert event["type"] == "message.new" and event["folder_id"] == inbox["id"]
    assert event["position"] > ready["position"]
    (message,) = alice.ok("GET", f"/v1/folders/{inbox['id']}/messages")["messages"]
    assert event["ids"] == [message["id"]]
    alice.ok("PATCH", f"/v1/messages/{message['id']}", {"seen": True})
    flags = ws.receive()
    assert flags["type"] == "message.flags" and flags["flags"][0]["seen"] is True
    made = alice.ok("POST", "/v1/folders", {"name": "Later"}, status=201)
    assert ws.receive() == {"type": "folder.created", "position": flags["position"] + 1,
                            "folder_id": made["id"], "name": "Later"}
    alice.ok("DELETE", f"/v1/messages/{message['id']}", status=204)
    assert ws.receive()["type"] == "message.deleted"
    ws.close()


def test_reconnect_with_position_misses_nothing(alice: Api) -> None:
    ws = connect(alice)
    last = ws.receive()["position"]
    deliver(alice.server, ALICE, "one")
    last = ws.receive()["position"]
    ws.close()
    for subject in ("two", "three", "four"):  # while disconnected
        deliver(alice.server, ALICE, subject)
    ws = connect(alice, f"?since={last}")
    missed = [ws.receive() for _ in range(3)]
    assert [e["type"] for e in missed] == ["message.new"] * 3
    assert [e["position"] for e in missed] == sorted(e["position"] for e in missed)
    ready = ws.receive()
    assert ready["type"] == "ready" and ready["position"] == missed[-1]["position"]
    deliver(alice.server, ALICE, "five")
    assert ws.receive()["position"] > ready["position"]  # then live
    ws.close()
    # A position the log does not hold (one from a restored backup): resync.
    resync = connect(alice, f"?since={ready['position'] + 1000}")
    first = resync.receive()
    assert first["type"] == "resync" and first["position"] >= ready["position"]
    resync.close()


def test_long_poll(alice: Api) -> None:
    start = alice.ok("GET", "/v1/events")
    assert start["events"] == []
    position = start["position"]
    result: dict[str, object] = {}

    def poll() -> None:
        began = time.monotonic()
        result["answer"] = alice.ok("GET", f"/v1/events?since={position}&wait=20")
        result["took"] = time.monotonic() - began
    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    deliver(alice.server, ALICE, "wake up")
    waiter.join(20)
    answer = result["answer"]
    assert isinstance(answer, dict) and result["took"] < 5  # type: ignore[operator]
    assert [e["type"] for e in answer["events"]] == ["message.new"]
    assert answer["position"] == answer["events"][0]["position"]
    empty = alice.ok("GET", f"/v1/events?since={answer['position']}&wait=0.3")
    assert empty == {"events": [], "position": answer["position"]}
    gone = alice.get(f"/v1/events?since={answer['position'] + 1000}")
    assert gone.status == 410 and gone.problem == "resync" and gone.json["position"] == answer["position"]
    assert alice.get("/v1/events?since=x").problem == "invalid-field"
    assert alice.get("/v1/events?since=1&wait=9999").problem == "invalid-field"


def test_bad_token_gets_no_socket(alice: Api) -> None:
    ws = WebSocket("127.0.0.1", alice.server.ports["api"], "/v1/events", "mdt_wrong")
    assert ws.status == 401


def test_shutdown_says_going_away(alice: Api) -> None:
    ws = connect(alice)
    assert ws.receive()["type"] == "ready"
    stopper = threading.Thread(target=alice.server.stop)
    stopper.start()
    try:
        ws.receive()
        raise AssertionError("no close frame")
    except EOFError as exc:
        assert "server shutting down" in str(exc)
    stopper.join(30)
    assert alice.server.process is not None and alice.server.process.returncode == 0


def test_positions_hold_across_a_restart(alice: Api) -> None:
    """The change log is durable: a client that was away while the daemon restarted gets
    what it missed, before and after the restart."""
    last = alice.ok("GET", "/v1/events")["position"]
    deliver(alice.server, ALICE, "before the restart")
    alice.server.restart()
    deliver(alice.server, ALICE, "after the restart")
    got = alice.ok("GET", f"/v1/events?since={last}")
    assert [e["type"] for e in got["events"]] == ["message.new", "message.new"]
    ws = connect(alice, f"?since={last}")
    assert [ws.receive()["type"] for _ in range(3)] == ["message.new", "message.new", "ready"]
    ws.close()
