"""THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES over the messages a search key
matches, from their stored envelopes (Message-ID, References, In-Reply-To, Subject, Date).

Threads are trees of :class:`_Node`; a node without a message is a dummy standing for a
message that is referred to but not in the mailbox (or not matched). Sent dates are those
of SORT (DATE): the Date header in UTC, else the internal date; ties keep mailbox order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from maild.imap import sort as sorting
from maild.imap.commands import SearchKey, SearchOp
from maild.store.types import Envelope, Mailbox, MessageMeta

if TYPE_CHECKING:
    from maild.store import Store

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass(eq=False)
class _Node:
    number: int | None = None  # what the answer names: sequence number or uid; None: dummy
    seq: int = 0
    sent: float = 0.0
    subject: str = ""  # the base subject
    reply: bool = False  # the subject had a reply or forward marker
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)

    def adopt(self, child: _Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def adopt_children(self, other: _Node) -> None:
        """All of ``other``'s children become this node's, in one move."""
        for child in other.children:
            child.parent = self
        self.children.extend(other.children)
        other.children = []

    def descends_from(self, other: _Node) -> bool:
        """This node is ``other`` or below it: making ``other`` its child would loop. A
        walk up the parents, as deep as the thread, not as wide."""
        if not other.children:  # nothing below ``other``: only it is itself
            return self is other
        node: _Node | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def order(self) -> tuple[float, int]:
        """Sort position: the node's own sent date, or its first child's for a dummy."""
        if self.number is None and self.children:
            return self.children[0].order()
        return self.sent, self.seq


@dataclass
class _Message:
    number: int  # what the answer names: sequence number or uid
    seq: int
    sent: float
    subject: str  # the base subject, upper case
    reply: bool
    message_id: str | None
    references: tuple[str, ...]  # References, or else In-Reply-To's first id


_Facts = tuple[float, str, bool, str | None, tuple[str, ...]]  # _Message's, cached per uid


def _facts(envelope: Envelope, meta: MessageMeta) -> _Facts:
    base, reply = sorting.subject_parts(envelope.subject)
    own = _MESSAGE_ID.findall(envelope.message_id or "")[:1]
    references = (_MESSAGE_ID.findall(envelope.references or "")
                  or _MESSAGE_ID.findall(envelope.in_reply_to or "")[:1])
    return sorting.sent_date(envelope, meta), base.upper(), reply, own[0] if own else None, tuple(references)


def thread(store: Store, user: str, mailbox_id: int, uidvalidity: int, uids: list[int], key: SearchKey,
           algorithm: str, by_uid: bool) -> bytes:
    """The thread-list octets of the THREAD response (RFC 5256 §4) for the messages of
    ``uids`` matching ``key``, numbered by uid or sequence number. Reads every match's
    record and the envelopes of those whose facts are not in SORT's key cache: run off the
    reactor."""
    rows, metas = sorting.matching(store, user, mailbox_id, uids, key)
    owner = store.user(user)
    if not rows or owner is None:
        return b""
    name = (owner.id, uidvalidity, mailbox_id, "THREAD")
    facts: dict[int, _Facts] = sorting.cached_values(store, user, mailbox_id, uids, metas, {name: _facts})[name]
    messages = [_Message(uid if by_uid else seq, seq, *facts[uid]) for seq, uid in rows]
    roots = _ordered_subject(messages) if algorithm == "ORDEREDSUBJECT" else _references(messages)
    return b"".join(b"(" + _render(root) + b")" for root in roots)


def _node(message: _Message) -> _Node:
    return _Node(message.number, message.seq, message.sent, message.subject, message.reply)


def _by_date(nodes: list[_Node]) -> None:
    nodes.sort(key=_Node.order)


def _ordered_subject(messages: list[_Message]) -> list[_Node]:
    """RFC 5256 §4 ORDEREDSUBJECT: messages grouped by base subject, each group's first
    message (by sent date) the parent of the rest; groups ordered by that first message."""
    groups: dict[str, list[_Node]] = {}
    for message in messages:
        node = _node(message)
        groups.setdefault(node.subject, []).append(node)
    roots = []
    for group in groups.values():
        _by_date(group)
        for child in group[1:]:
            group[0].adopt(child)
        roots.append(group[0])
    _by_date(roots)
    return roots


def _references(messages: list[_Message]) -> list[_Node]:
    """RFC 5256 §4 REFERENCES, its steps numbered as there."""
    by_id: dict[str, _Node] = {}
    nodes = []
    for message in messages:  # (1)
        node = _node(message)
        nodes.append(node)
        # The message's own container: a dummy made for its Message-ID by an earlier
        # message's references becomes it; a duplicate Message-ID is ignored (unique).
        own = message.message_id
        if own is not None:
            held = by_id.get(own)
            if held is None:
                by_id[own] = node
            elif held.number is None:
                _take_place(held, node)
                by_id[own] = node
        # (1A) each reference the parent of the next, unless that one has a parent already
        # or the link would make a loop.
        previous: _Node | None = None
        for message_id in message.references:
            current = by_id.setdefault(message_id, _Node())
            if previous is not None and current.parent is None and not previous.descends_from(current):
                previous.adopt(current)
            previous = current
        # (1B) the last reference is the message's parent, replacing any it had.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if previous is not None and not previous.descends_from(node):
            previous.adopt(node)
    everything = {id(n): n for n in [*by_id.values(), *nodes]}.values()
    roots = _prune([n for n in everything if n.parent is None])  # (2), (3)
    for root in roots:
        _sort_children(root)  # a dummy's date is its first child's
    _by_date(roots)  # (4)
    roots = _merge_subjects(roots)  # (5)
    for root in roots:
        _sort_children(root)  # (6)
    _by_date(roots)
    return roots


def _take_place(placeholder: _Node, node: _Node) -> None:
    """Give the message ``node`` the place and children of a dummy made for its Message-ID."""
    node.adopt_children(placeholder)
    parent = placeholder.parent
    if parent is not None:
        parent.children[parent.children.index(placeholder)] = node
        node.parent, placeholder.parent = parent, None


def _prune(roots: list[_Node]) -> list[_Node]:
    """(3) Dummies without children go; a dummy's children take its place, except at the
    root, where a dummy with several children stays: it holds their thread together.
    Children before parents, without recursion: a reply chain can be thousands deep."""
    for node in _below_first(roots):
        kept: list[_Node] = []
        for child in node.children:
            kept.extend([child] if child.number is not None else child.children)
        node.children = kept
        for child in kept:
            child.parent = node
    out: list[_Node] = []
    for node in roots:
        out.extend([node] if node.number is not None or len(node.children) > 1 else node.children)
    for node in out:
        node.parent = None
    return out


def _below_first(roots: list[_Node]) -> list[_Node]:
    """Every node under ``roots`` (and they), each after all of its descendants."""
    order: list[_Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()  # a node was listed before its descendants: now after
    return order


def _subject_of(node: _Node) -> _Node:
    """The node whose subject stands for a root: itself, or a dummy's first child."""
    return node if node.number is not None or not node.children else node.children[0]


def _merge_subjects(roots: list[_Node]) -> list[_Node]:
    """(5) Root threads with the same base subject are brought together."""
    table: dict[str, _Node] = {}
    for root in roots:  # (5A)
        subject = _subject_of(root).subject
        if not subject:
            continue
        held = table.get(subject)
        if (held is None or (root.number is None and held.number is not None)
                or ((root.number is None or held.number is not None)
                    and _subject_of(held).reply and not _subject_of(root).reply)):
            table[subject] = root
    out: list[_Node] = []
    for root in roots:  # (5B)
        if root.parent is not None:
            continue  # merged into an earlier thread
        subject = _subject_of(root).subject
        held = table.get(subject) if subject else None
        if held is None or held is root:
            out.append(root)
        elif held.number is None and root.number is None:
            held.adopt_children(root)
        elif held.number is None:
            held.adopt(root)
        elif root.number is None:
            root.adopt(held)
            table[subject] = root
            out.append(root)
        elif not held.reply and root.reply:
            held.adopt(root)
        elif held.reply and not root.reply:
            root.adopt(held)
            table[subject] = root
            out.append(root)
        else:  # both replies or neither: siblings under a dummy, not parent and child
            dummy = _Node()
            dummy.adopt(held)
            dummy.adopt(root)
            table[subject] = dummy
            out.append(dummy)
    return [node for node in out if node.parent is None]


def _sort_children(root: _Node) -> None:
    """Every set of siblings under ``root`` by sent date (a dummy's children first, so
    that its own date, its first child's, is known)."""
    for node in _below_first([root]):
        _by_date(node.children)


def _render(root: _Node) -> bytes:
    """RFC 5256 §5 thread-members / thread-nested: a single child continues the chain,
    several each open a list. Below the root every node holds a message. Without
    recursion, for the same reason as :func:`_prune`."""
    out: list[bytes] = []
    stack: list[_Node | bytes] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        node = item
        numbers = [] if node.number is None else [b"%d" % node.number]
        while node.number is not None and len(node.children) == 1:
            node = node.children[0]
            assert node.number is not None  # _prune leaves dummies only among the roots
            numbers.append(b"%d" % node.number)
        out.append(b" ".join(numbers))
        if node.children and numbers:
            out.append(b" ")
        for child in reversed(node.children):  # popped in order: "(" child ")" each
            stack.extend((b")", child, b"("))
    return b"".join(out)


Tree = list[tuple[int | None, "Tree"]]  # (uid, or None for a missing parent; its children)


def thread_tree(store: Store, user: str, mailbox: Mailbox) -> Tree:
    """The REFERENCES threads of a whole mailbox (the THREAD command's, RFC 5256 §4) as
    nested (uid, children) pairs, oldest thread first: the HTTP API's threads, handed this
    function by the wiring. Off the reactor, as :func:`thread`."""
    uids = store.uids(user, mailbox.id)
    rows, metas = sorting.matching(store, user, mailbox.id, uids, SearchKey(SearchOp.ALL))
    owner = store.user(user)
    if not rows or owner is None:
        return []
    name = (owner.id, mailbox.uidvalidity, mailbox.id, "THREAD")
    facts: dict[int, _Facts] = sorting.cached_values(store, user, mailbox.id, uids, metas, {name: _facts})[name]
    roots = _references([_Message(uid, seq, *facts[uid]) for seq, uid in rows])
    out: Tree = []
    stack = [(root, out) for root in reversed(roots)]  # no recursion: a thread may be deep
    while stack:
        node, siblings = stack.pop()
        children: Tree = []
        siblings.append((node.number, children))
        stack.extend((child, children) for child in reversed(node.children))
    return out
