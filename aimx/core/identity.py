"""Who a message is from and what it is about, parsed once (L0, pure).

One strict RFC 5322 §3.4 address parser (with the RFC 6532 UTF-8 extension)
serves every reader: the inbound trust verdict and DMARC alignment, the stored
frontmatter, the hook environment, SEND authorisation and MCP replies.  Nothing
else derives an address from header text (docs/design.md, "Parse, never scan").

The parser is linear in its input: the standard library's C{email.headerregistry}
gives the same mailboxes on well-formed input (tests/test_identity.py compares
the two on random input) but takes quadratic time on hostile comments, dots or
commas (a 16 KiB From of nested comments costs it seconds).  Values it cannot
read are reported as problems, never guessed: an address the parser is unsure of
is never trusted.

L{Identity} holds the identity header fields of a message: From, Sender,
Reply-To, To, Cc, Subject, Date, Message-ID, In-Reply-To and References.  When a
field occurs more than once the bottom instance is used, since that is the one a
DKIM signature covers (RFC 6376 §5.4.2), and the repetition is recorded: such a
message is never trusted.
"""

import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.utils import parsedate_tz
from typing import NamedTuple

import attrs

from aimx.core import headertext
from aimx.core.threadid import message_ids, thread_id

#: Address fields longer than this are not parsed (a problem is recorded instead).
MAX_ADDRESS_FIELD = 16384
#: Comments nested deeper than this make a field unreadable (mail never needs it).
MAX_COMMENT_DEPTH = 16
#: Characters of a Subject that are decoded and kept; the rest is cut (marked).
MAX_SUBJECT = 16384

# -- lexer -------------------------------------------------------------------

_ATOM, _QSTR, _DLIT, _SPECIAL, _BAD = "atom", "qstr", "dlit", "special", "bad"
_QSTR_EW = "qstr-ew"  # a quoted string holding encoded words as written
_WORDS = (_ATOM, _QSTR, _QSTR_EW)
# atext (RFC 5322 §3.2.3) plus UTF8-non-ascii (RFC 6532 §3.2), C1 controls excluded.
_SCAN = re.compile(
    r"""(?P<ws>[ \t]+)
    |(?P<atom>[^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,."]+)
    |(?P<qstr>"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*")
    |(?P<dlit>\[(?:[^\[\]\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*\])
    |(?P<special>[<>@,;:.])
    |(?P<comment>\()""",
    re.X,
)
_COMMENT_STEP = re.compile(r"[^()\\]*(?:\\.)?")
_QUOTED_PAIR = re.compile(r"\\(.)")


class _Token(NamedTuple):
    kind: str
    text: str
    #: What precedes it: 0 nothing, 1 whitespace, 2 a comment.
    gap: int


def _comment_end(text: str, pos: int) -> int | None:
    """The index after the comment opening at C{pos}; None when it is unterminated
    or nested deeper than L{MAX_COMMENT_DEPTH}."""
    depth = 0
    while pos < len(text):
        char = text[pos]
        if char == "(":
            depth += 1
            if depth > MAX_COMMENT_DEPTH:
                return None
            pos += 1
        elif char == ")":
            depth -= 1
            pos += 1
            if depth == 0:
                return pos
        else:
            step = _COMMENT_STEP.match(text, pos)
            if step.end() == pos:  # a lone trailing backslash
                return None
            pos = step.end()
    return None


def _lex(text: str) -> tuple[list[_Token], bool]:
    """The tokens of an address field and whether it held a comment."""
    tokens: list[_Token] = []
    gap, comment, pos = 0, False, 0
    while pos < len(text):
        match = _SCAN.match(text, pos)
        kind = match.lastgroup if match else None
        if kind == "ws":
            gap = max(gap, 1)
        elif kind == "comment":
            end = _comment_end(text, pos)
            if end is None:
                tokens.append(_Token(_BAD, "(", gap))
                break
            comment, gap = True, 2
            pos = end
            continue
        elif kind is None:
            tokens.append(_Token(_BAD, text[pos], gap))
            if text[pos] in '"[\\':
                break  # unterminated: rescanning from each later one would be quadratic
            gap = 0
            pos += 1
            continue
        else:
            value = match.group()
            if kind == _QSTR:
                # Encoded words are decoded only where written as such: "=\?" is literal.
                encoded = "=?" in value
                value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
                kind = _QSTR_EW if encoded else _QSTR
            tokens.append(_Token(kind, value, gap))
            gap = 0
        pos = match.end()
    return tokens, comment


# -- values ------------------------------------------------------------------

_DOT_ATOM = re.compile(r"[^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,.\"]+(?:\.[^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,.\"]+)*")
_PHRASE_SAFE = re.compile(r"[^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,.\"]+(?: [^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,.\"]+)*")
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]+")
_ENCODED_ATOM = re.compile(f"(?:{headertext.ENCODED_WORD.pattern})+")


def _quote(text: str) -> str:
    """A quoted string of C{text}; a literal C{=?} is written C{=\\?} so that no
    reader takes it for the start of an encoded word."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("=?", "=\\?")
    return f'"{text}"'


@attrs.frozen
class Mailbox:
    """One mailbox of an address field.

    @ivar display_name: the decoded display name, or C{""}.
    @ivar local_part: the local part, unquoted.
    @ivar domain: the domain as written, or an address literal C{[...]}.
    @ivar plain: the address was written as plain dot-atoms around one C{@} (no
        quoted string, comment, space, encoded word or address literal inside it,
        nothing that was not UTF-8): the only form a trusted sender may have.
    @ivar quoted: the local part was written as (or with) a quoted string.
    """

    display_name: str
    local_part: str
    domain: str
    plain: bool = True
    quoted: bool = False

    @property
    def addr_spec(self) -> str:
        """C{local@domain}, the local part quoted when it is not a dot-atom."""
        local = self.local_part
        if not _DOT_ATOM.fullmatch(local):
            local = _quote(local)
        return f"{local}@{self.domain}"

    @property
    def address(self) -> str:
        """L{addr_spec} lower-cased: what allowlists and comparisons use."""
        return self.addr_spec.lower()

    @property
    def domain_lower(self) -> str:
        return self.domain.lower()

    def formatted(self) -> str:
        """C{Name <addr>} or C{addr}, quoted so that it parses back to this mailbox."""
        name = self.display_name
        if not name:
            return self.addr_spec
        if not _PHRASE_SAFE.fullmatch(name) or "=?" in name:
            name = _quote(name)
        return f"{name} <{self.addr_spec}>"

    def wire(self) -> str:
        """L{formatted} for a 7-bit header: a non-ASCII name as RFC 2047 encoded words
        (unless the address itself is UTF-8, RFC 6532: then the header is 8-bit anyway)."""
        if self.display_name.isascii() or not self.addr_spec.isascii():
            return self.formatted()
        name = Header(self.display_name, "utf-8").encode(linesep="\r\n")
        return f"{name} <{self.addr_spec}>"


@attrs.frozen
class AddressList:
    """The parsed value of one address field.

    @ivar mailboxes: every mailbox, group members included, in order.
    @ivar group: the field used group syntax (C{name: ...;}).
    @ivar comment: the field held a comment.
    @ivar problems: what could not be read (an address dropped, stray text...).
    """

    mailboxes: tuple[Mailbox, ...] = ()
    group: bool = False
    comment: bool = False
    problems: tuple[str, ...] = ()

    def formatted(self) -> str:
        """The mailboxes, each L{Mailbox.formatted}, C{", "}-joined (C{""} when none)."""
        return ", ".join(m.formatted() for m in self.mailboxes)

    @property
    def single(self) -> Mailbox | None:
        """The one mailbox of a field holding exactly one, cleanly, outside any group."""
        if len(self.mailboxes) != 1 or self.group or self.problems:
            return None
        return self.mailboxes[0]


EMPTY = AddressList()

# -- parser ------------------------------------------------------------------


class _Invalid(Exception):
    """The address at hand cannot be read; the parser skips to the next one."""


class _Parser:
    """Recursive descent over the tokens of one field (RFC 5322 §3.4, obs forms
    of §4.4 accepted and marked not plain).  Each token is looked at a bounded
    number of times."""

    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.pos = 0
        self.group = False
        self.problems: list[str] = []

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == _SPECIAL and token.text == text

    def words(self) -> list[_Token]:
        """Atoms, quoted strings and dots: a phrase or a local part."""
        start = self.pos
        while (token := self.peek()) is not None and (
            token.kind in _WORDS or (token.kind == _SPECIAL and token.text == ".")
        ):
            self.pos += 1
        return self.tokens[start : self.pos]

    def address_list(self) -> list[Mailbox]:
        out: list[Mailbox] = []
        while self.peek() is not None:
            if self.at(","):
                self.pos += 1  # obs-addr-list allows empty elements
                continue
            start = self.pos
            try:
                out += self.address(in_group=False)
                if self.peek() is not None and not self.at(","):
                    raise _Invalid("unexpected text after an address")
            except _Invalid as e:
                self.problems.append(str(e))
                self.skip(start, (",",))
        return out

    def skip(self, start: int, stops: tuple[str, ...]) -> None:
        """Move past a broken address to the next of C{stops} outside C{<...>}
        (and, at the top level, outside a group)."""
        self.pos = max(self.pos, start + 1)
        depth = 0
        while (token := self.peek()) is not None:
            if token.kind == _SPECIAL:
                if token.text == "<" or (token.text == ":" and stops == (",",)):
                    depth += 1
                elif token.text == ">" or (token.text == ";" and stops == (",",)):
                    depth = max(0, depth - 1)
                elif token.text in stops and depth == 0:
                    return
            self.pos += 1

    def address(self, in_group: bool) -> list[Mailbox]:
        words = self.words()
        if self.at(":"):
            if in_group:
                raise _Invalid("a group inside a group")
            self.pos += 1
            return self.group_list(words)
        if self.at("<"):
            return [self.name_addr(words)]
        if self.at("@"):
            self.pos += 1
            return [_mailbox("", words, *self.domain())]
        if not words and self.peek() is None:
            raise _Invalid("an empty address")
        raise _Invalid("not an address")

    def group_list(self, name: list[_Token]) -> list[Mailbox]:
        self.group = True
        if not name:
            self.problems.append("a group without a name")
        members: list[Mailbox] = []
        while True:
            token = self.peek()
            if token is None:
                self.problems.append("a group without its closing ';'")
                return members
            if self.at(";"):
                self.pos += 1
                return members
            if self.at(","):
                self.pos += 1
                continue
            start = self.pos
            try:
                members += self.address(in_group=True)
                if not (self.at(",") or self.at(";") or self.peek() is None):
                    raise _Invalid("unexpected text in a group")
            except _Invalid as e:
                self.problems.append(str(e))
                self.skip(start, (",", ";"))

    def name_addr(self, name: list[_Token]) -> Mailbox:
        self.pos += 1  # "<"
        plain = True
        if self.at("@"):  # obs-route: <@a,@b:local@domain>
            plain = False
            while (token := self.peek()) is not None and not self.at(":"):
                if token.kind == _SPECIAL and token.text in ("<", ">"):
                    raise _Invalid("a broken route in an address")
                self.pos += 1
            if token is None:
                raise _Invalid("a broken route in an address")
            self.pos += 1
        words = self.words()
        if not self.at("@"):
            raise _Invalid("an address without '@'")
        self.pos += 1
        mailbox = _mailbox(_phrase(name), words, *self.domain())
        if not self.at(">"):
            raise _Invalid("an address without its closing '>'")
        self.pos += 1
        return mailbox if plain else attrs.evolve(mailbox, plain=False)

    def domain(self) -> tuple[str, bool]:
        at_gap = self.tokens[self.pos - 1].gap
        token = self.peek()
        if token is None:
            raise _Invalid("an address without a domain")
        if token.kind == _DLIT:
            self.pos += 1
            return token.text, False
        parts: list[str] = []
        plain = at_gap == 0 and token.gap == 0
        expect_atom = True
        while (token := self.peek()) is not None:
            if expect_atom and token.kind == _ATOM:
                parts.append(token.text)
            elif not expect_atom and token.kind == _SPECIAL and token.text == ".":
                parts.append(".")
            else:
                break
            if parts[1:] and token.gap:
                plain = False
            expect_atom = not expect_atom
            self.pos += 1
        if not parts or expect_atom:
            raise _Invalid("an address with a malformed domain")
        return "".join(parts), plain


def _mailbox(name: str, words: list[_Token], domain: str, domain_plain: bool) -> Mailbox:
    local, plain = _local_part(words)
    if headertext.ENCODED_WORD.search(local) or headertext.ENCODED_WORD.search(domain):
        # RFC 2047 §5 forbids them here; readers disagree on what they mean.
        raise _Invalid("an encoded word in an address")
    quoted = any(w.kind != _ATOM and w.kind != _SPECIAL for w in words)
    if "\ufffd" in local or "\ufffd" in domain:
        plain = False  # bytes that were not UTF-8: the address cannot be read faithfully
    return Mailbox(name, local, domain, plain and domain_plain, quoted)


def _local_part(words: list[_Token]) -> tuple[str, bool]:
    """The local part's value and whether it is a plain dot-atom."""
    if not words:
        raise _Invalid("an address without a local part")
    if words[0].kind == _SPECIAL:
        raise _Invalid("a local part starting with '.'")
    for before, word in zip(words, words[1:]):
        if before.kind != _SPECIAL and word.kind != _SPECIAL:
            # "john smith@x": two words without a dot between are no local part.
            raise _Invalid("a local part with a space in it")
    text = "".join(w.text for w in words)
    plain = (
        all(w.kind == _ATOM or w.kind == _SPECIAL for w in words)
        and all(w.gap == 0 for w in words[1:])
        and _DOT_ATOM.fullmatch(text) is not None
    )
    return text, plain


def _phrase(words: list[_Token]) -> str:
    """A display name: words joined as written, encoded words decoded (RFC 2047 §6.2:
    no space between adjacent encoded words), control characters made spaces.

    An atom is decoded only when it is made of encoded words alone (RFC 2047 §5);
    a quoted string's encoded words are decoded too, as mail clients do.
    """
    if words and words[0].kind == _SPECIAL:
        raise _Invalid("a display name starting with '.'")
    out: list[str] = []
    previous_encoded = False
    for word in words:
        encoded = word.kind == _ATOM and _ENCODED_ATOM.fullmatch(word.text) is not None
        text = word.text
        if encoded or word.kind == _QSTR_EW:
            text = headertext.decode_words(text)
        if out and word.gap and not (previous_encoded and encoded):
            out.append(" ")
        out.append(text)
        previous_encoded = encoded
    return _CONTROLS.sub(" ", "".join(out))


def parse_address_list(text: str) -> AddressList:
    """Parse an address field value (unfolded text) into its mailboxes.

    @param text: the field value after the colon, already unfolded.
    @return: the mailboxes and what was wrong; never raises.
    """
    if len(text) > MAX_ADDRESS_FIELD:
        return AddressList(problems=(f"longer than {MAX_ADDRESS_FIELD} characters",))
    tokens, comment = _lex(text)
    parser = _Parser(tokens)
    mailboxes = parser.address_list()
    bad = [t.text for t in tokens if t.kind == _BAD]
    problems = parser.problems
    if bad and not problems:
        problems = ["unexpected characters"]
    return AddressList(tuple(mailboxes), parser.group, comment, tuple(problems))


# -- the identity of a message ----------------------------------------------

#: Fields of the identity, lower-cased, in the order their problems are reported.
FIELDS = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
          "in-reply-to", "references")
#: Top-level MIME fields that must also occur at most once.
MIME_FIELDS = ("content-type", "mime-version", "content-transfer-encoding")
_NAMES = {
    "from": "From", "sender": "Sender", "reply-to": "Reply-To", "to": "To", "cc": "Cc",
    "subject": "Subject", "date": "Date", "message-id": "Message-ID",
    "in-reply-to": "In-Reply-To", "references": "References",
    "content-type": "Content-Type", "mime-version": "MIME-Version",
    "content-transfer-encoding": "Content-Transfer-Encoding",
}
_COUNT_WORDS = {2: "two", 3: "three", 4: "four"}


def display_name(field: str) -> str:
    """How a lower-cased field name is written (C{"message-id"} -> C{"Message-ID"})."""
    return _NAMES.get(field, field)


@attrs.frozen(kw_only=True)
class Identity:
    """The identity fields of one message, each from its bottom instance.

    @ivar from_: the From field.
    @ivar sender: the Sender field, or None when absent.
    @ivar subject: the decoded Subject, C{""} when absent.
    @ivar date: the Date as RFC 3339 with the sender's offset, or None.
    @ivar message_id: the Message-ID without brackets, or C{""}.
    @ivar in_reply_to: the last In-Reply-To id, or None.
    @ivar references: the References ids, in order.
    @ivar thread_id: L{aimx.core.threadid.thread_id} of those fields.
    @ivar repeated: C{(field name, count)} of identity and top-level MIME fields
        that occur more than once.
    @ivar present: the lower-cased names of the identity and top-level MIME
        fields the message has.
    @ivar ambiguous: the header block reads differently to DKIM and to the MIME
        parser (L{aimx.core.headerblock}).
    """

    from_: AddressList = EMPTY
    sender: AddressList | None = None
    reply_to: AddressList = EMPTY
    to: AddressList = EMPTY
    cc: AddressList = EMPTY
    subject: str = ""
    date: str | None = None
    message_id: str = ""
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    thread_id: str = thread_id(None, None, None)
    repeated: tuple[tuple[str, int], ...] = ()
    present: frozenset[str] = frozenset()
    ambiguous: bool = False

    @property
    def author(self) -> Mailbox | None:
        """The single From mailbox, or None (none, several, a group, unreadable)."""
        return self.from_.single

    @property
    def author_domain(self) -> str | None:
        """The lower-cased domain of L{author}: what DMARC and DKIM alignment use."""
        author = self.author
        return None if author is None else author.domain_lower

    def without(self, names) -> "Identity":
        """This identity with the named fields (lower-cased: to, cc, date, message-id,
        in-reply-to, references) withheld, the thread id taken from what is left."""
        changes = {
            "to": {"to": EMPTY}, "cc": {"cc": EMPTY}, "date": {"date": None},
            "message-id": {"message_id": ""}, "in-reply-to": {"in_reply_to": None},
            "references": {"references": ()},
        }
        kept = attrs.evolve(self, **{k: v for n in names for k, v in changes[n].items()})
        return attrs.evolve(kept, thread_id=thread_id(
            f"<{kept.message_id}>" if kept.message_id else None,
            f"<{kept.in_reply_to}>" if kept.in_reply_to else None,
            " ".join(f"<{ref}>" for ref in kept.references) or None,
        ))

    def problem(self) -> str | None:
        """Why no sender can be trusted from these fields, or None when one can.

        Checked in order: an ambiguous header block, repeated fields, the From
        field, its address's form, then a Sender in another domain.
        """
        if self.ambiguous:
            return "header block reads differently to DKIM and to MIME (bare CR or From line)"
        if self.repeated:
            name, count = self.repeated[0]
            return f"{_COUNT_WORDS.get(count, count)} {display_name(name)} headers"
        from_ = self.from_
        if from_.group:
            return "From is a group"
        if not from_.mailboxes:
            return "no address in From" if not from_.problems else "From could not be parsed"
        if len(from_.mailboxes) > 1:
            return "more than one address in From"
        if from_.problems:
            return "From could not be parsed"
        author = from_.mailboxes[0]
        if not author.plain:
            if author.quoted:
                return "quoted local part in From"
            if author.domain.startswith("["):
                return "address literal in From"
            return "From address is not a plain dot-atom"
        if self.sender is not None:
            sender = self.sender.single
            if sender is None:
                return "Sender could not be parsed"
            if sender.domain_lower != author.domain_lower:
                return "Sender domain differs from From"
        return None


def from_headers(items: Iterable[tuple[str, str]], ambiguous: bool = False) -> Identity:
    """Build the identity of a message from its top-level header fields.

    @param items: C{(name, raw value)} pairs in message order (compat32 raw
        values: 8-bit bytes as surrogate escapes, folds kept).
    @param ambiguous: see L{Identity.ambiguous}.
    """
    counts: Counter = Counter()
    last: dict[str, str] = {}
    for name, value in items:
        key = name.strip().lower()
        if key in _NAMES:
            counts[key] += 1
            last[key] = value
    values = {key: headertext.clean(value) for key, value in last.items()}

    def addresses(key: str) -> AddressList:
        value = values.get(key)
        return EMPTY if value is None else parse_address_list(value)

    raw_id, raw_parent, raw_refs = (values.get(k) for k in ("message-id", "in-reply-to",
                                                             "references"))
    own = message_ids(raw_id)
    parents = message_ids(raw_parent)
    return Identity(
        from_=addresses("from"),
        sender=addresses("sender") if "sender" in values else None,
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        subject=_subject(values.get("subject", "")),
        date=rfc3339(values["date"]) if values.get("date") else None,
        message_id=own[0] if own else "",
        in_reply_to=parents[-1] if parents else None,
        references=tuple(message_ids(raw_refs)),
        thread_id=thread_id(raw_id, raw_parent, raw_refs),
        repeated=tuple((key, counts[key]) for key in FIELDS + MIME_FIELDS if counts[key] > 1),
        present=frozenset(counts),
        ambiguous=ambiguous,
    )


def _subject(value: str) -> str:
    """The decoded Subject, at most L{MAX_SUBJECT} characters of it (cut marked)."""
    if len(value) > MAX_SUBJECT:
        return headertext.decode_words(value[:MAX_SUBJECT]).strip() + " [...]"
    return headertext.decode_words(value).strip()


def rfc3339(value: str) -> str | None:
    """A Date field as RFC 3339 keeping the sender's offset; C{Z} for a zero
    offset (C{+0000}, C{-0000}, C{GMT}); None when unparseable."""
    try:
        parts = parsedate_tz(value)
        if parts is None:
            return None
        offset = parts[9] or 0
        year, month, day, hour, minute, second = parts[:6]
        when = datetime(
            year, month, day, hour, minute,
            min(second, 59),  # a leap second (RFC 5322 §3.3) has no datetime
            tzinfo=timezone(timedelta(seconds=offset)),
        )
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    text = when.isoformat()
    return text[:-6] + "Z" if offset == 0 else text
