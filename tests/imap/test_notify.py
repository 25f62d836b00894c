"""NOTIFY (RFC 5465): two sessions of one user, NOTIFY SET in one (the watcher), changes in
the other (the actor). The watcher reads its notifications without sending a command
(they come between commands, §3) unless a test says otherwise."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from maild.imap.commands import EventGroup, FetchAtt, Notify, Section
from maild.imap.notify import MAX_PENDING
from maild.imap.parser import ParseError, parse_command
from tests.conftest import MaildServer
from tests.imap.conftest import Transcript, append, message
from tests.imap.test_concurrent import LOAD_SECONDS

SUPPORTED = b"BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange " \
    b"MailboxMetadataChange ServerMetadataChange)"


def lines(s: Transcript, n: int) -> list[bytes]:
    """The next ``n`` responses, which the server sent without being asked."""
    started = time.monotonic()
    out = [s.line() for _ in range(n)]
    assert time.monotonic() - started < 5.0
    return out


def test_parse() -> None:
    cmd = parse_command(b"a NOTIFY SET STATUS (selected (MessageNew (UID BODY.PEEK[HEADER]) messageexpunge)) "
                        b"(subtree (Lists Work) (MessageNew MessageExpunge)) (mailboxes INBOX NONE) "
                        b"(personal (XFuture))")
    assert cmd == Notify("a", "NOTIFY", (
        EventGroup("SELECTED", (), ("MessageNew", "MessageExpunge"),
                   (FetchAtt("UID"), FetchAtt("BODY", Section(text="HEADER"), peek=True))),
        EventGroup("SUBTREE", ("Lists", "Work"), ("MessageNew", "MessageExpunge")),
        EventGroup("MAILBOXES", ("INBOX",), ()),
        EventGroup("PERSONAL", (), ("XFuture",))), status=True)
    assert parse_command(b"b notify none") == Notify("b", "NOTIFY", None)
    for bad in (b"NOTIFY", b"NOTIFY bogus", b"NOTIFY NONE ", b"NOTIFY SET", b"NOTIFY SET ", b"NOTIFY SET STATUS",
                b"NOTIFY SET ()", b"NOTIFY SET (unknown (MessageNew))", b"NOTIFY SET (personal MessageNew)",
                b"NOTIFY SET (personal (MessageNew) )", b"NOTIFY SET (personal (MessageNew)) ",
                b"NOTIFY SET (subtree (MessageNew))", b"NOTIFY SET (personal ())",
                b"NOTIFY SET (selected (MessageNew () MessageExpunge))"):
        try:
            parse_command(b"t " + bad)
        except ParseError:
            continue
        raise AssertionError(bad)


def test_capability_and_refusals(connect: Callable[..., Transcript]) -> None:
    s = connect(login=False)
    s.bad("NOTIFY NONE")  # authenticated and selected states only
    s, actor = connect(), connect()
    assert b"NOTIFY" in s.ok("CAPABILITY")[0].split()
    s.ok("NOTIFY SET (personal (MailboxName))")
    # §5: MessageNew and MessageExpunge together; FlagChange needs both; BAD.
    s.bad("NOTIFY SET (selected (MessageNew))")
    s.bad("NOTIFY SET (personal (MessageExpunge))")
    s.bad("NOTIFY SET (selected (FlagChange))")
    s.bad("NOTIFY SET (personal (FlagChange MessageNew))")
    # §6.1: one selected filter, message events only.
    s.bad("NOTIFY SET (selected (MailboxName))")
    s.bad("NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))")
    # §3.1: an unsupported event is NO (not BAD) with BADEVENT listing what is supported.
    for command in ("NOTIFY SET (personal (XUnknownEvent))", "NOTIFY SET (selected (AnnotationChange))",
                    "NOTIFY SET (selected (MessageNew MessageExpunge AnnotationChange))"):
        untagged, result = s.command(command)
        assert result.startswith(b"NO [" + SUPPORTED + b"]"), result
    # Too many mailboxes to watch: NO [NOTIFICATIONOVERFLOW] (§3.1).
    many = " ".join(f"M{i}" for i in range(1001))
    s.no(f"NOTIFY SET (mailboxes ({many}) (MessageNew MessageExpunge))", code="NOTIFICATIONOVERFLOW")
    # A refused NOTIFY leaves the one before in force.
    actor.ok("CREATE Still")
    assert lines(s, 1) == [b'* LIST (\\HasNoChildren) "/" Still']
    s.ok("NOTIFY NONE")


def test_status_for_other_mailboxes(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    watcher.ok("SELECT INBOX")
    assert watcher.ok("NOTIFY SET (personal (MessageNew MessageExpunge))") == []
    append(actor, "Archive", message("one"))
    # §5.2: an unsolicited STATUS (UIDNEXT MESSAGES) for a mailbox other than the selected.
    assert lines(watcher, 1) == [b"* STATUS Archive (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]
    actor.ok("SELECT Archive")
    actor.ok("STORE 1 +FLAGS (\\Seen)")  # FlagChange was not asked for
    actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    actor.ok("EXPUNGE")
    assert lines(watcher, 1) == [b"* STATUS Archive (MESSAGES 0 UIDNEXT 2 UNSEEN 0)"]  # §5.3
    # The selected mailbox's events are no STATUS; with no SELECTED group they come as RFC
    # 3501 has them, at the end of a command.
    append(actor, "INBOX", message("two"))
    assert watcher.ok("NOOP") == [b"* 1 EXISTS", b"* 1 RECENT"]
    # With CONDSTORE enabled, HIGHESTMODSEQ too (§5.2); FlagChange gives UIDVALIDITY and UNSEEN (§5.1).
    watcher.ok("SELECT INBOX (CONDSTORE)")
    watcher.ok("NOTIFY SET (personal (MessageNew MessageExpunge FlagChange))")
    uid = append(actor, "Archive", message("three"))
    status = lines(watcher, 1)[0]
    assert status.startswith(b"* STATUS Archive (MESSAGES 1 UIDNEXT %d UNSEEN 1 HIGHESTMODSEQ " % (uid + 1)), status
    actor.ok("NOOP")
    actor.ok(f"UID STORE {uid} +FLAGS (\\Seen)")
    status = lines(watcher, 1)[0]
    assert status.startswith(b"* STATUS Archive (UIDVALIDITY ") and b" UNSEEN 0 HIGHESTMODSEQ " in status, status


def test_selected_mailbox_between_commands(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (Subject)]) MessageExpunge FlagChange)) "
               "(personal (MessageNew MessageExpunge))")
    uid = append(actor, "INBOX", message("Lemonade dinner"))
    # §5.2: EXISTS, then a FETCH with what MessageNew asked for.
    header = b"Subject: Lemonade dinner\r\n\r\n"
    assert lines(watcher, 3) == [
        b"* 1 EXISTS", b"* 1 RECENT",
        b"* 1 FETCH (UID %d BODY[HEADER.FIELDS (Subject)] {%d}\r\n" % (uid, len(header)) + header + b")"]
    actor.ok("SELECT INBOX")
    # §5.1: a flag change is a FETCH with UID and FLAGS.
    actor.ok("STORE 1 +FLAGS (\\Flagged)")
    assert lines(watcher, 1) == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID %d)" % uid]
    # §5.3: EXPUNGE at once with SELECTED (no command of the watcher's is running).
    actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert lines(watcher, 1) == [b"* 1 FETCH (FLAGS (\\Deleted \\Flagged \\Recent) UID %d)" % uid]
    actor.ok("EXPUNGE")
    assert lines(watcher, 1) == [b"* 1 EXPUNGE"]
    # The watcher's own APPEND: EXISTS in its answer, no FETCH for it (§5.2).
    append(watcher, "INBOX", message("mine"))
    assert watcher.ok("NOOP") == []
    assert watcher.ok("FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))"]
    # After a reselect the group applies to the newly selected mailbox.
    watcher.ok("SELECT Archive")
    uid = append(actor, "Archive", message("to archive"))
    header = b"Subject: to archive\r\n\r\n"
    assert lines(watcher, 3)[2] == b"* 1 FETCH (UID %d BODY[HEADER.FIELDS (Subject)] {%d}\r\n" % (uid, len(header)) \
        + header + b")"
    append(actor, "INBOX", message("now elsewhere"))  # INBOX is no longer selected: STATUS
    assert lines(watcher, 1) == [b"* STATUS INBOX (MESSAGES 2 UIDNEXT 4 UNSEEN 2)"]


def test_no_expunge_while_answering_fetch(connect: Callable[..., Transcript]) -> None:
    """SELECTED sends EXPUNGE at once only when no command runs: one that comes while the
    watcher's FETCH is answered waits for its tagged OK (RFC 3501 §7.4.1), then follows
    without a command."""
    watcher, actor = connect(), connect()
    big = message("big", body=("x" * 998 + "\r\n") * 8000)  # more than the socket buffers hold
    append(actor, "INBOX", big)
    append(actor, "INBOX", message("small"))
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))")
    watcher.send("f1 FETCH 1 (BODY.PEEK[])")  # not read yet: the FETCH waits for the watcher
    time.sleep(0.5)
    actor.ok("SELECT INBOX")
    actor.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    actor.ok("EXPUNGE")
    got = [watcher.line() for _ in range(3)]
    assert got[0].startswith(b"* 1 FETCH (BODY[] {%d}" % len(big))
    assert got[1:] == [b"f1 OK FETCH completed", b"* 2 EXPUNGE"]


def test_selected_delayed_keeps_expunge_for_a_command_that_may_carry_it(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    append(actor, "INBOX", message("a"))
    append(actor, "INBOX", message("b"))
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected-delayed (MessageNew MessageExpunge FlagChange))")
    actor.ok("SELECT INBOX")
    actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert lines(watcher, 1) == [b"* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)"]
    actor.ok("EXPUNGE")
    append(actor, "INBOX", message("c"))
    # New messages come at once; the EXPUNGE waits (§6.1.2). (The actor appended to the
    # mailbox it has selected: the new message is \Recent there.)
    assert lines(watcher, 2) == [b"* 3 EXISTS", b"* 2 RECENT"]
    # Not while answering FETCH (RFC 3501 §7.4.1)...
    assert watcher.ok("FETCH 2:3 (UID)") == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)"]
    # ...but at a NOOP.
    assert watcher.ok("NOOP") == [b"* 1 EXPUNGE"]


def test_mailbox_name_and_subscription_change(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    watcher.ok("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    actor.ok("CREATE Lists/Foo")  # the parent is made too (RFC 3501 §6.3.3)
    assert lines(watcher, 2) == [b'* LIST (\\HasChildren) "/" Lists', b'* LIST (\\HasNoChildren) "/" Lists/Foo']
    # §5.4: RENAME gives the new name with OLDNAME.
    actor.ok("RENAME Lists/Foo Lists/Bar")
    assert lines(watcher, 1) == [b'* LIST (\\HasNoChildren) "/" Lists/Bar ("OLDNAME" (Lists/Foo))']
    actor.ok("DELETE Lists/Bar")
    assert lines(watcher, 1) == [b'* LIST (\\NonExistent) "/" Lists/Bar']  # §5.4
    # §5.5: \Subscribed iff subscribed after the event.
    actor.ok("SUBSCRIBE Lists")
    assert lines(watcher, 1) == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Lists']
    actor.ok("UNSUBSCRIBE Lists")
    assert lines(watcher, 1) == [b'* LIST (\\HasNoChildren) "/" Lists']
    actor.ok("SUBSCRIBE Nope")
    assert lines(watcher, 1) == [b'* LIST (\\NonExistent \\Subscribed) "/" Nope']
    # A mailbox name in modified UTF-7 on the wire.
    actor.ok("CREATE Entw&APw-rfe")
    assert lines(watcher, 1) == [b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe']


def test_metadata_changes(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
    # §5.6, RFC 5464 §4.4.2: an unsolicited METADATA with the names of the changed entries.
    actor.ok('SETMETADATA Archive (/private/comment "x" /shared/comment "y")')
    assert lines(watcher, 1) == [b"* METADATA Archive /private/comment /shared/comment"]
    actor.ok('SETMETADATA INBOX (/private/comment "selected too")')
    assert lines(watcher, 1) == [b"* METADATA INBOX /private/comment"]
    actor.ok('SETMETADATA "" (/shared/vendor/x/y "z")')  # §5.7
    assert lines(watcher, 1) == [b'* METADATA "" /shared/vendor/x/y']
    watcher.ok("NOTIFY SET (personal (MailboxMetadataChange))")
    actor.ok('SETMETADATA "" (/shared/vendor/x/y NIL)')
    assert watcher.ok("NOOP") == []


def test_notify_none_stops_them(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge MailboxName))")
    append(actor, "Archive", message("seen"))
    assert lines(watcher, 1) == [b"* STATUS Archive (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]
    watcher.ok("NOTIFY NONE")
    append(actor, "Archive", message("not told"))
    actor.ok("CREATE Quiet")
    append(actor, "INBOX", message("told at the end of a command"))
    time.sleep(0.3)
    # Nothing came between commands; the selected mailbox keeps RFC 3501's updates.
    assert watcher.ok("NOOP") == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert watcher.ok("NOOP") == []


def test_notify_set_status(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    append(actor, "Junk", message("spam"))
    watcher.ok("SELECT INBOX")
    # §3.1: a STATUS for each watched mailbox but the selected one, before the tagged OK.
    assert watcher.ok("NOTIFY SET STATUS (personal (MessageNew MessageExpunge))") == [
        b"* STATUS Archive (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %s UNSEEN 0)" % uidvalidity(watcher, "Archive"),
        b"* STATUS Drafts (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %s UNSEEN 0)" % uidvalidity(watcher, "Drafts"),
        b"* STATUS Junk (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %s UNSEEN 1)" % uidvalidity(watcher, "Junk"),
        b"* STATUS Sent (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %s UNSEEN 0)" % uidvalidity(watcher, "Sent"),
        b"* STATUS Trash (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %s UNSEEN 0)" % uidvalidity(watcher, "Trash")]
    watcher.ok("UNSELECT")
    # §6.3: inboxes are where mail is delivered: INBOX, and Junk for spam.
    status = watcher.ok("NOTIFY SET STATUS (inboxes (MessageNew MessageExpunge)) (personal (MailboxName))")
    assert [line.split(b" (")[0] for line in status] == [b"* STATUS INBOX", b"* STATUS Junk"]
    # No STATUS for mailbox events alone.
    assert watcher.ok("NOTIFY SET STATUS (personal (MailboxName))") == []


def uidvalidity(s: Transcript, mailbox: str) -> bytes:
    line = s.ok(f"STATUS {mailbox} (UIDVALIDITY)")[0]
    return line.rsplit(b" ", 1)[1].rstrip(b")")


def test_filters(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    actor.ok("CREATE Lists/Lemonade")
    actor.ok("CREATE Work/2024")
    actor.ok("SUBSCRIBE Work/2024")
    # The first group covering a mailbox decides; NONE ends the search (§6).
    watcher.ok("NOTIFY SET (mailboxes Archive NONE) (subtree Lists (MessageNew MessageExpunge)) "
               "(mailboxes (Sent Lists) NONE) (subscribed (MessageNew MessageExpunge)) (inboxes (MailboxName))")
    for mailbox in ("Archive", "Lists", "Lists/Lemonade", "Sent", "Work", "Work/2024", "INBOX", "Drafts"):
        append(actor, mailbox, message(f"to {mailbox}"))
    # Sent and Archive are subscribed, but a NONE group covers them first; Work is not.
    got = lines(watcher, 5)
    assert [line.split(b" (")[0] for line in got] == [
        b"* STATUS Lists", b"* STATUS Lists/Lemonade", b"* STATUS Work/2024", b"* STATUS INBOX", b"* STATUS Drafts"]
    assert watcher.ok("NOOP") == []


def test_during_idle(connect: Callable[..., Transcript]) -> None:
    watcher, actor = connect(), connect()
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected-delayed (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))")
    watcher.send("i1 IDLE")
    assert watcher.line() == b"+ idling"
    # §4: during IDLE the events NOTIFY asked for; IDLE may carry EXPUNGE.
    append(actor, "Trash", message("binned"))
    assert lines(watcher, 1) == [b"* STATUS Trash (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]
    append(actor, "INBOX", message("new"))
    assert lines(watcher, 2) == [b"* 1 EXISTS", b"* 1 RECENT"]
    actor.ok("SELECT INBOX")
    actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")  # the selected mailbox: as IDLE has it
    assert lines(watcher, 1) == [b"* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)"]
    actor.ok("EXPUNGE")
    assert lines(watcher, 1) == [b"* 1 EXPUNGE"]
    watcher.send("DONE")
    assert watcher.line() == b"i1 OK IDLE completed"


def test_rfc_example(connect: Callable[..., Transcript]) -> None:
    """The example of §3.1 as its errata correct it: the original ("(selected MessageNew
    (...) MessageExpunge) (subtree Lists MessageNew)") breaks the §8 grammar and the §5
    rule that MessageNew and MessageExpunge come together."""
    watcher, actor = connect(), connect()
    for name in ("Lists", "Lists/Lemonade", "Lists/Im2000"):
        actor.ok(f"CREATE {name}")
    watcher.ok("SELECT INBOX")
    watcher.bad("NOTIFY SET STATUS (selected MessageNew (uid body.peek[header.fields (from to subject)]) "
                "MessageExpunge) (subtree Lists MessageNew)")
    status = watcher.ok("notify set status (selected (MessageNew (uid body.peek[header.fields (from to subject)]) "
                        "MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))")
    assert [line.split(b" (")[0] for line in status] == [b"* STATUS Lists", b"* STATUS Lists/Im2000",
                                                         b"* STATUS Lists/Lemonade"]
    raw = (b"From: Randy <randy@example.test>\r\nTo: lemonade@example.test\r\nSubject: Re: Lemonade Dinner\r\n"
           b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nSee you there.\r\n")
    uid = append(actor, "INBOX", raw)
    fields = b"From: Randy <randy@example.test>\r\nTo: lemonade@example.test\r\nSubject: Re: Lemonade Dinner\r\n\r\n"
    assert lines(watcher, 3) == [
        b"* 1 EXISTS", b"* 1 RECENT",
        b"* 1 FETCH (UID %d BODY[HEADER.FIELDS (from to subject)] {%d}\r\n" % (uid, len(fields)) + fields + b")"]
    append(actor, "Lists/Lemonade", message("dinner"))
    assert lines(watcher, 1) == [b"* STATUS Lists/Lemonade (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]
    append(actor, "Archive", message("not watched"))
    assert watcher.ok("NOOP") == []


def test_overflow(connect: Callable[..., Transcript]) -> None:
    """A client that stops reading: its notifications wait, at most MAX_PENDING of them, then
    it gets OK [NOTIFICATIONOVERFLOW] and NOTIFY is off (§5.8)."""
    watcher, actor = connect(), connect()
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected (MessageNew (BODY.PEEK[]) MessageExpunge)) (personal (MailboxName))")
    # A message larger than the socket buffers: its FETCH waits for the watcher to read,
    # and the next notifications wait with it.
    big = message("big", body=("x" * 998 + "\r\n") * 8000)
    append(actor, "INBOX", big)
    time.sleep(0.5)
    names = [f"Box{i}" for i in range(MAX_PENDING + 1)]
    actor.send("".join(f"c{i} CREATE {name}\r\n" for i, name in enumerate(names)).encode()[:-2])
    for i in range(len(names)):
        assert actor.collect(f"c{i}")[1].startswith(b"OK")
    got = lines(watcher, 3)
    assert got[:2] == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert got[2].startswith(b"* 1 FETCH (BODY[] {%d}" % len(big))
    assert watcher.line() == b"* OK [NOTIFICATIONOVERFLOW] Too many notifications waiting; NOTIFY is off"
    # As after NOTIFY NONE: nothing more between commands, and no LIST.
    actor.ok("CREATE After")
    assert watcher.ok("NOOP") == []
    watcher.ok("NOTIFY SET (personal (MailboxName))")
    actor.ok("DELETE After")
    assert lines(watcher, 1) == [b'* LIST (\\NonExistent) "/" After']


def test_under_load_sequence_numbers_stay_consistent(imap_server: MaildServer,
                                                     connect: Callable[..., Transcript]) -> None:
    """Two actors append, flag, expunge and make mailboxes while the watcher only reads what
    NOTIFY sends between commands: every EXISTS, EXPUNGE and FETCH number is valid where it
    comes, the count the watcher keeps from them is the mailbox's at the end, and the log
    has no traceback."""
    log_start = len(imap_server.log())
    watcher = connect()
    actors = [connect(), connect()]
    watcher.ok("SELECT INBOX")
    watcher.ok("NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange)) "
               "(personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))")
    for a in actors:
        a.ok("SELECT INBOX")
    deadline = time.monotonic() + min(LOAD_SECONDS, 8.0)
    problems: list[str] = []

    def act(s: Transcript, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            op = rng.choice(["append", "append", "other", "store", "expunge", "mailbox"])
            if op in ("append", "other"):
                raw = message(f"load {rng.random()}", "z" * rng.choice([10, 2000]))
                box = "INBOX" if op == "append" else rng.choice(["Archive", "Trash"])
                command = f"APPEND {box} {{{len(raw)}+}}\r\n".encode() + raw
            elif op == "store":
                lo = rng.randint(1, 200)
                flag = rng.choice(["\\Deleted", "\\Seen", "Kw"])
                command = f"UID STORE {lo}:{lo + 3} +FLAGS ({flag})".encode()
            elif op == "expunge":
                command = b"EXPUNGE"
            else:
                name = f"Tmp{seed}x{rng.randint(0, 3)}"
                command = rng.choice([f"CREATE {name}", f"DELETE {name}", f"SUBSCRIBE {name}"]).encode()
            _, result = s.command(command)
            if not (result.startswith(b"OK") or (op == "mailbox" and result.startswith(b"NO"))):
                problems.append(f"{op}: {result[:200]!r}")

    threads = [threading.Thread(target=act, args=(a, n)) for n, a in enumerate(actors)]
    for t in threads:
        t.start()
    count, fetches, expunges = 0, 0, 0
    watcher.sock.settimeout(0.5)
    while any(t.is_alive() for t in threads):
        try:
            line = watcher.line()
        except TimeoutError:
            continue
        words = line.split(b" ")
        if line.endswith(b" EXISTS"):
            assert int(words[1]) >= count, line
            count = int(words[1])
        elif line.endswith(b" EXPUNGE"):
            assert 1 <= int(words[1]) <= count, (line, count)
            count -= 1
            expunges += 1
        elif words[2:3] == [b"FETCH"]:
            assert 1 <= int(words[1]) <= count, (line, count)
            fetches += 1
        else:
            assert line.startswith((b"* RECENT", b"* STATUS ", b"* LIST ", b"* FLAGS ", b"* OK [PERMANENTFLAGS"))\
                or line.endswith(b" RECENT"), line
    for t in threads:
        t.join()
    watcher.sock.settimeout(10)
    assert not problems, problems[:10]
    for line in watcher.ok("NOOP"):
        if line.endswith(b" EXISTS"):
            count = int(line.split(b" ")[1])
        elif line.endswith(b" EXPUNGE"):
            count -= 1
    messages = int(actors[0].ok("STATUS INBOX (MESSAGES)")[0].split(b"MESSAGES ")[1].rstrip(b")"))
    # Both sequence-number checks above ran: FETCHes and EXPUNGEs were announced.
    assert count == messages and fetches > 10 and expunges > 0, (count, messages, fetches, expunges)
    log = imap_server.log()[log_start:]
    assert "Traceback" not in log and "SERVERBUG" not in log, log[-4000:]


def test_search_update_with_fetch_attributes(connect: Callable[..., Transcript]) -> None:
    """§7: with NOTIFY and CONTEXT=SEARCH, RETURN (UPDATE (fetch-att ...)) FETCHes a new
    message that joins the results after its EXISTS and before the ADDTO; one that joins by
    a flag change gets no FETCH, one that does not match neither."""
    watcher, actor = connect(), connect()
    append(actor, "INBOX", message("old", sender="boss@example.test"), flags="Boss")
    watcher.ok("SELECT INBOX")  # t2
    assert watcher.ok("SEARCH RETURN (COUNT UPDATE (UID BODY.PEEK[HEADER.FIELDS (TO FROM SUBJECT)])) KEYWORD Boss") \
        == [b'* ESEARCH (TAG "t3") COUNT 1']
    uid = append(actor, "INBOX", message("Status report", sender="boss@example.test"), flags="Boss")
    fields = b"From: Bob <boss@example.test>\r\nTo: alice@example.test\r\nSubject: Status report\r\n\r\n"
    assert watcher.ok("NOOP") == [
        b"* 2 EXISTS", b"* 2 RECENT",
        b"* 2 FETCH (UID %d BODY[HEADER.FIELDS (TO FROM SUBJECT)] {%d}\r\n" % (uid, len(fields)) + fields + b")",
        b'* ESEARCH (TAG "t3") ADDTO (0 2)']
    append(actor, "INBOX", message("from someone else"))
    assert watcher.ok("NOOP") == [b"* 3 EXISTS", b"* 3 RECENT"]
    actor.ok("SELECT INBOX")
    actor.ok("STORE 3 +FLAGS (Boss)")  # joins by a flag change: no FETCH of its header
    assert watcher.ok("NOOP") == [b"* 3 FETCH (FLAGS (Boss \\Recent) UID 3)", b'* ESEARCH (TAG "t3") ADDTO (0 3)']
    # During IDLE the same, as it happens.
    watcher.send("i1 IDLE")
    assert watcher.line() == b"+ idling"
    uid = append(actor, "INBOX", message("Later", sender="boss@example.test"), flags="Boss")
    got = lines(watcher, 4)
    # (\\Recent is the actor's: it has INBOX selected.)
    assert got[:2] == [b"* 4 EXISTS", b"* 3 RECENT"] and got[2].startswith(b"* 4 FETCH (UID %d BODY[" % uid)
    assert got[3] == b'* ESEARCH (TAG "t3") ADDTO (0 4)'
    watcher.send("DONE")
    assert watcher.line() == b"i1 OK IDLE completed"
    # The syntax: fetch attributes only after UPDATE, never empty.
    watcher.bad("SEARCH RETURN (UPDATE ()) ALL")
    watcher.bad("SEARCH RETURN (COUNT (UID)) ALL")
