"""The RFC 5321 command grammar, parsed at the edge into typed command objects.

One function, :func:`parse_command`, turns one command line (without its CRLF) into a
command dataclass or raises :class:`CommandError` carrying the reply to send. The address
grammar is strict (RFC 5321 §4.1.2, extended by RFC 6531 §3.3 for SMTPUTF8): the server
decides relaying on the parsed :class:`MailPath`, never on a string it re-splits itself, so
``user%other@local``, ``"user@other"@local``, ``other!user@local`` keep their whole local
part and ``@local:user@other`` resolves to ``user@other`` (the source route is ignored,
RFC 5321 §4.1.1.3 and Appendix C).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

# RFC 5321 §4.5.3.1: local-part 64 octets, domain 255, path 256 (including the brackets).
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256


class CommandError(Exception):
    """A syntax error in one command; carries the reply to send."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(f"{code} {enhanced} {text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text


def _syntax(text: str) -> CommandError:
    return CommandError(501, "5.5.4", text)  # RFC 3463: 5.5.4 invalid command arguments


@dataclass(frozen=True)
class MailPath:
    """A parsed RFC 5321 Mailbox, the address of a reverse- or forward-path (§4.1.2; named
    MailPath beside the store's mailboxes): the local part unquoted, the domain as written
    (an address literal keeps its brackets)."""

    local_part: str
    domain: str

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def has_routing(self) -> bool:
        """Local part holds a relay operator of the percent hack, UUCP bang paths or a
        quoted ``@`` (RFC 5321 Appendix C; Postfix's allow_untrusted_routing)."""
        return any(c in self.local_part for c in "%!@")

    @property
    def is_ascii(self) -> bool:
        return self.local_part.isascii() and self.domain.isascii()

    @property
    def domain_key(self) -> str:
        """The domain for lookups: lower case (RFC 5321 §2.4: domains are case-blind)."""
        return self.domain.lower()

    @property
    def address(self) -> str:
        """``local@domain`` with the local part quoted when RFC 5321 requires it and the
        domain lower-cased; the form handed to the directory and the queue."""
        return f"{quote_local_part(self.local_part)}@{self.domain_key}"

    def __str__(self) -> str:
        return f"{quote_local_part(self.local_part)}@{self.domain}"


class Verb(enum.StrEnum):
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"


class Body(enum.StrEnum):
    """RFC 6152 BODY parameter values we accept (no BINARYMIME)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"


@dataclass(frozen=True)
class Hello:
    verb: Verb  # EHLO or HELO
    domain: str
    valid: bool  # the argument is a Domain or address-literal (RFC 5321 §4.1.1.1)


@dataclass(frozen=True)
class MailFrom:
    sender: MailPath | None  # None: the null reverse-path <>
    size: int | None = None  # RFC 1870 SIZE=
    body: Body | None = None  # RFC 6152 BODY=
    smtputf8: bool = False  # RFC 6531 §3.4
    auth: str | None = None  # RFC 4954 §5 AUTH= (accepted, not trusted)
    params: dict[str, str | None] = field(default_factory=dict)  # as sent, keys upper case

    @property
    def address(self) -> str:
        return "" if self.sender is None else self.sender.address


@dataclass(frozen=True)
class RcptTo:
    recipient: MailPath | None  # None: the bare <Postmaster> of RFC 5321 §4.5.1
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    pass


@dataclass(frozen=True)
class Bdat:
    size: int
    last: bool


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Vrfy:
    argument: str


@dataclass(frozen=True)
class Help:
    topic: str | None


@dataclass(frozen=True)
class StartTls:
    pass


@dataclass(frozen=True)
class Auth:
    mechanism: str  # upper case
    initial_response: str | None  # base64 text, "=" for an empty response, None: absent


Command = (Hello | MailFrom | RcptTo | Data | Bdat | Rset | Noop | Quit | Vrfy | Help
           | StartTls | Auth)

# --- lexical pieces (RFC 5321 §4.1.2, RFC 5322 §3.2.3 atext, RFC 6531 §3.3) -------------

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_UTF8 = "\u0080-\U0010ffff"
_ATOM = rf"[{_ATEXT}{_UTF8}]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
# qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126
_QUOTED_STRING = re.compile(rf'"((?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*)"')
_SUB_DOMAIN = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9\-{_UTF8}]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN = re.compile(rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*")
_ADDRESS_LITERAL = re.compile(r"\[([^\[\]\\\s]+)\]")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_ESMTP_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+")  # RFC 6531 §3.3 esmtp-value
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")  # RFC 3461 §4
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MECHANISM = re.compile(r"[A-Z0-9\-_]{1,20}")  # RFC 4422 §3.1 sasl-mech
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?|=")


def quote_local_part(local: str) -> str:
    """RFC 5321 §4.1.2: a local part that is not a Dot-string travels as a Quoted-string."""
    if _DOT_STRING.fullmatch(local):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_ip_literal(text: str) -> bool:
    """RFC 5321 §4.1.3 IPv4 and IPv6 address literals; the General-address-literal has
    no other standardized tag, so anything else is refused."""
    try:
        if text[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(text[5:])
        elif re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", text):
            ipaddress.IPv4Address(text)
        else:
            return False
    except ValueError:
        return False
    return True


def parse_domain(text: str) -> str | None:
    """Return the Domain or address-literal if ``text`` is exactly one, else None."""
    if not text or len(text.encode()) > MAX_DOMAIN:
        return None
    literal = _ADDRESS_LITERAL.fullmatch(text)
    if literal:
        return text if _is_ip_literal(literal.group(1)) else None
    if not _DOMAIN.fullmatch(text):
        return None
    if any(len(label.encode()) > 63 for label in text.split(".")):  # RFC 1035 §2.3.4
        return None
    return text


def parse_mailbox(text: str) -> MailPath:
    """Parse ``Local-part "@" ( Domain / address-literal )`` exactly (no brackets)."""
    if text.startswith('"'):
        quoted = _QUOTED_STRING.match(text)
        if not quoted:
            raise _syntax("Bad quoted local part")
        local = re.sub(r"\\(.)", r"\1", quoted.group(1))
        rest = text[quoted.end():]
    else:
        dot = _DOT_STRING.match(text)
        if not dot:
            raise _syntax("Bad local part")
        local = dot.group(0)
        rest = text[dot.end():]
    if not rest.startswith("@"):
        raise _syntax("Address must be local-part@domain")
    if not local:
        raise _syntax("Empty local part")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise _syntax("Local part too long")
    domain = parse_domain(rest[1:])
    if domain is None:
        raise _syntax("Bad domain in address")
    return MailPath(local, domain)


def _parse_path(text: str, allow_null: bool) -> tuple[MailPath | None, str]:
    """Parse a Path at the start of ``text``; return (mailbox, rest after ">")."""
    if not text.startswith("<"):
        raise _syntax("Address must be enclosed in <>")
    end = _path_end(text)
    inner = text[1:end]
    if len(text[: end + 1].encode()) > MAX_PATH:
        raise _syntax("Path too long")
    rest = text[end + 1:]
    if inner == "":
        if not allow_null:
            raise _syntax("Null path not allowed here")
        return None, rest
    if inner.startswith("@"):
        # RFC 5321 §4.1.2 A-d-l ":" Mailbox; §3.6.1: the source route MUST be ignored.
        route, colon, inner = inner.partition(":")
        if not colon:
            raise _syntax("Bad source route")
        for hop in route.split(","):
            if not hop.startswith("@") or parse_domain(hop[1:]) is None:
                raise _syntax("Bad source route")
    return parse_mailbox(inner), rest


def _path_end(text: str) -> int:
    """Index of the ">" closing the path at text[0] == "<", honouring quoted strings."""
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
        i += 1
    raise _syntax("Unterminated <path>")


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue  # RFC 5321 allows only single spaces; tolerate runs of them
        keyword, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(keyword):
            raise _syntax(f"Bad parameter {keyword[:20]!r}")
        if eq and not _ESMTP_VALUE.fullmatch(value):
            raise _syntax(f"Bad value for {keyword.upper()}")
        key = keyword.upper()
        if key in params:
            raise _syntax(f"Duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def _unknown_param(key: str) -> CommandError:
    # RFC 5321 §4.1.1.11: 555 when MAIL/RCPT parameters are not recognised.
    return CommandError(555, "5.5.4", f"Unsupported parameter {key}")


def _parse_mail(arg: str) -> MailFrom:
    if arg[:5].upper() != "FROM:":
        raise _syntax("Syntax: MAIL FROM:<address> [parameters]")
    sender, rest = _parse_path(arg[5:].lstrip(" "), allow_null=True)
    if rest and not rest.startswith(" "):
        raise _syntax("Expected a space before parameters")
    params = _parse_params(rest)
    size: int | None = None
    body: Body | None = None
    smtputf8 = False
    auth: str | None = None
    for key, value in params.items():
        if key == "SIZE":  # RFC 1870 §3: size-value ::= 1*20DIGIT
            if value is None or not re.fullmatch(r"\d{1,20}", value):
                raise _syntax("SIZE needs a number")
            size = int(value)
        elif key == "BODY":  # RFC 6152 §2
            try:
                body = Body((value or "").upper())
            except ValueError:
                raise _syntax("BODY must be 7BIT or 8BITMIME") from None
        elif key == "SMTPUTF8":  # RFC 6531 §3.4: no value
            if value is not None:
                raise _syntax("SMTPUTF8 takes no value")
            smtputf8 = True
        elif key == "AUTH":  # RFC 4954 §5: AUTH=xtext or <>
            if value is None or not _XTEXT.fullmatch(value):
                raise _syntax("Bad AUTH= value")
            auth = value
        else:
            raise _unknown_param(key)
    if sender is not None and not sender.is_ascii and not smtputf8:
        # RFC 6531 §3.5: non-ASCII addresses need the SMTPUTF8 parameter.
        raise CommandError(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
    return MailFrom(sender, size, body, smtputf8, auth, params)


def _parse_rcpt(arg: str) -> RcptTo:
    if arg[:3].upper() != "TO:":
        raise _syntax("Syntax: RCPT TO:<address> [parameters]")
    text = arg[3:].lstrip(" ")
    # RFC 5321 §4.1.1.3: "<Postmaster>" without a domain is always accepted.
    recipient: MailPath | None
    if text[:12].lower() == "<postmaster>":
        recipient, rest = None, text[12:]
    else:
        recipient, rest = _parse_path(text, allow_null=False)
    if rest and not rest.startswith(" "):
        raise _syntax("Expected a space before parameters")
    params = _parse_params(rest)
    for key in params:
        raise _unknown_param(key)  # no RCPT extensions (DSN) are advertised
    return RcptTo(recipient, params)


def _no_argument(verb: Verb, arg: str) -> None:
    if arg:
        raise _syntax(f"{verb.value} takes no arguments")


def parse_command(line: bytes) -> Command:
    """Parse one command line (CRLF already removed)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(500, "5.5.2", "Command is not valid UTF-8") from None
    if _CONTROL.search(text):
        raise CommandError(500, "5.5.2", "Control characters in command")
    word, _, arg = text.partition(" ")
    try:
        verb = Verb(word.upper())
    except ValueError:
        raise CommandError(500, "5.5.2", "Command unrecognized") from None
    arg = arg.strip(" ")
    if verb in (Verb.EHLO, Verb.HELO):
        if not arg or " " in arg:
            raise _syntax(f"Syntax: {verb.value} hostname")
        return Hello(verb, arg, parse_domain(arg) is not None)
    if verb is Verb.MAIL:
        return _parse_mail(arg)
    if verb is Verb.RCPT:
        return _parse_rcpt(arg)
    if verb is Verb.BDAT:  # RFC 3030 §2: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ]
        match = re.fullmatch(r"(\d{1,20})(?: +(LAST))?", arg, re.IGNORECASE)
        if not match:
            raise _syntax("Syntax: BDAT size [LAST]")
        return Bdat(int(match.group(1)), match.group(2) is not None)
    if verb is Verb.AUTH:  # RFC 4954 §4
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        if not _MECHANISM.fullmatch(mech):
            raise _syntax("Syntax: AUTH mechanism [initial-response]")
        initial = initial.strip(" ")
        if initial and not _BASE64.fullmatch(initial):
            raise CommandError(501, "5.5.2", "Invalid base64 in initial response")
        return Auth(mech, initial or None)
    if verb is Verb.VRFY:
        if not arg:
            raise _syntax("Syntax: VRFY address")
        return Vrfy(arg)
    if verb is Verb.HELP:
        return Help(arg or None)
    if verb is Verb.NOOP:
        return Noop()  # RFC 5321 §4.1.1.9: the argument is ignored
    _no_argument(verb, arg)
    simple: dict[Verb, Command] = {Verb.DATA: Data(), Verb.RSET: Rset(), Verb.QUIT: Quit(),
                                   Verb.STARTTLS: StartTls()}
    return simple[verb]
