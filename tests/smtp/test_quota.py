"""A full mailbox: 552 5.2.2 at RCPT when known, at end of data otherwise."""

from __future__ import annotations

import pytest

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages

BIG = b"From: a@remote.example\r\nSubject: big\r\n\r\n" + (b"q" * 998 + b"\r\n") * 600  # ~600 KB


@pytest.fixture(scope="module", autouse=True)
def small_user(server: MaildServer) -> None:
    server.cli("user", "add", "small@example.test", "--quota-mb", "1", "--password-stdin",
               input="small-secret\n", check=True)


def test_quota_at_end_of_data_then_at_rcpt(mx: Transcript, server: MaildServer) -> None:
    assert mx.message("a@remote.example", ["small@example.test"], BIG).code == 250
    # Without a declared size the recipient is still accepted; the store refuses the data.
    reply = mx.message("a@remote.example", ["small@example.test"], BIG)
    assert (reply.code, reply.text) == (552, "5.2.2 Mailbox full")
    # With SIZE= the server knows before the data.
    mx.cmd(f"MAIL FROM:<a@remote.example> SIZE={len(BIG)}", 250)
    assert mx.cmd("RCPT TO:<small@example.test>", 552).text == "5.2.2 Mailbox full"
    mx.cmd("RCPT TO:<alice@example.test>", 250)  # others are not affected
    mx.cmd("RSET", 250)
    assert len(messages(server, "small@example.test")) == 1
