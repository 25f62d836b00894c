"""ClamAV through a real clamd: INSTREAM verdicts and the filter's SMTP answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.filters.clamav import ClamavFilter, ClamdClient, ClamdError, parse_reply
from maild.util.transaction import Action
from tests.filters.conftest import ReactorThread, make_tx
from tests.filters.messages import EICAR_ATTACHED, EICAR_BODY, EICAR_ZIPPED, message
from tests.fixtures.clamd import EICAR, EICAR_SIGNATURE, ClamdProcess, free_port


def scan_filter(reactor_thread: ReactorThread, address: str, timeout: float = 5.0,
                on_error: str = "tempfail", max_size: int = 10 * 1024 * 1024) -> ClamavFilter:
    return ClamavFilter(ClamdClient(reactor_thread.reactor, address, timeout), max_size, on_error)


@pytest.mark.parametrize("raw", [EICAR_BODY, EICAR_ATTACHED, EICAR_ZIPPED],
                         ids=["body", "base64-attachment", "zip"])
def test_eicar_is_rejected_with_its_signature(reactor_thread, clamd, raw):
    tx = make_tx(raw)
    verdict = reactor_thread.call(scan_filter(reactor_thread, clamd.address).on_data, tx)
    assert verdict.action is Action.REJECT
    assert (verdict.reply.code, verdict.reply.enhanced) == (554, "5.7.1")
    assert verdict.reply.text == f"Message rejected: virus found: {EICAR_SIGNATURE}"
    assert tx.notes["virus"] == EICAR_SIGNATURE


def test_clean_message_has_no_objection(reactor_thread, clamd):
    tx = make_tx(message())
    assert reactor_thread.call(scan_filter(reactor_thread, clamd.address).on_data, tx) is None
    assert tx.notes["virus"] is None


def test_large_message_is_streamed_in_chunks(reactor_thread, clamd):
    raw = message("x" * 1000 + "\n") * 1000 + EICAR  # ~1.3 MB: 21 chunks of 64 KiB
    result = reactor_thread.call(ClamdClient(reactor_thread.reactor, clamd.address).scan, raw)
    assert result.signature == EICAR_SIGNATURE


def test_message_above_max_size_is_tagged_not_scanned(reactor_thread, clamd):
    flt = scan_filter(reactor_thread, clamd.address, max_size=100)
    verdict = reactor_thread.call(flt.on_data, make_tx(EICAR_BODY))
    assert verdict.action is Action.ACCEPT
    assert verdict.add_headers == [("X-Virus-Scan", "skipped (too large)")]


def test_message_above_clamds_stream_limit_is_tagged_not_tempfailed(reactor_thread, tmp_path):
    """A 451 would make the sender retry the same too-large message forever."""
    small = ClamdProcess(tmp_path / "clamd", stream_max_length="100K")
    small.start()
    try:
        flt = scan_filter(reactor_thread, small.address)
        raw = message("x" * 1000 + "\n") * 200 + EICAR
        verdict = reactor_thread.call(flt.on_data, make_tx(raw))
    finally:
        small.stop()
    assert verdict.action is Action.ACCEPT
    assert verdict.add_headers == [("X-Virus-Scan", "skipped (too large)")]


@pytest.fixture
def own_clamd(tmp_path: Path) -> Iterator[ClamdProcess]:
    process = ClamdProcess(tmp_path / "clamd")
    process.start()
    yield process
    process.stop()


def test_stopped_clamd_tempfails(reactor_thread, own_clamd):
    flt = scan_filter(reactor_thread, own_clamd.address)
    assert reactor_thread.call(flt.on_data, make_tx(message())) is None
    own_clamd.stop()
    verdict = reactor_thread.call(flt.on_data, make_tx(EICAR_BODY))
    assert verdict.action is Action.TEMPFAIL
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.1")


def test_stopped_clamd_accept_and_tag_when_configured(reactor_thread):
    flt = scan_filter(reactor_thread, f"127.0.0.1:{free_port()}", on_error="accept")
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert verdict.action is Action.ACCEPT
    assert verdict.add_headers == [("X-Virus-Scan", "failed")]


def test_clamd_that_does_not_answer_times_out(reactor_thread, silent_server):
    flt = scan_filter(reactor_thread, silent_server, timeout=0.3)
    started = time.monotonic()
    verdict = reactor_thread.call(flt.on_data, make_tx(message()))
    assert time.monotonic() - started < 2
    assert verdict.action is Action.TEMPFAIL
    assert verdict.reply.code == 451


def test_unix_socket(reactor_thread, tmp_path):
    process = ClamdProcess(tmp_path / "clamd")
    conf = process.conf.read_text().replace(f"TCPSocket {process.port}\n", "")
    conf = conf.replace(f"TCPAddr {process.host}\n", f"LocalSocket {tmp_path / 'clamd.ctl'}\n")
    process.conf.write_text(conf)
    process.ping = lambda: (tmp_path / "clamd.ctl").exists()  # type: ignore[method-assign]
    process.start()
    try:
        client = ClamdClient(reactor_thread.reactor, str(tmp_path / "clamd.ctl"))
        assert reactor_thread.call(client.scan, EICAR_BODY).signature == EICAR_SIGNATURE
    finally:
        process.stop()


@pytest.mark.parametrize(("reply", "signature"), [
    (b"stream: OK", None),
    (b"stream: Eicar-Test.UNOFFICIAL FOUND", "Eicar-Test.UNOFFICIAL"),
    (b"stream: Bad\r\nName FOUND", "BadName"),
])
def test_parse_reply(reply, signature):
    assert parse_reply(reply).signature == signature


@pytest.mark.parametrize("reply", [b"INSTREAM size limit exceeded. ERROR", b"", b"stream: ?"])
def test_parse_reply_errors(reply):
    with pytest.raises(ClamdError):
        parse_reply(reply)
