"""The stored mail file: TOML frontmatter between C{+++} lines, then the body (L0, pure).

docs/concepts.md, "Message files": layout, inbound keys and order, timestamps,
mark-read, sent-copy keys.  One canonical key order serves
inbound files and sent copies; unknown keys are kept after the known scalar
keys, and arrays of tables are written last.
"""

import ipaddress
import itertools
import posixpath
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import tomli_w

if TYPE_CHECKING:  # readers of mail files (the MCP process) need no MIME parser
    from aimx.core.message import ParsedMessage

#: Keys of an inbound file in their written order.
INBOUND_ORDER = (
    "id",
    "message_id",
    "thread_id",
    "from",
    "to",
    "cc",
    "reply_to",
    "delivered_to",
    "subject",
    "date",
    "received_at",
    "received_from_ip",
    "size_bytes",
    "body_sha256",
    "in_reply_to",
    "references",
    "list_id",
    "auto_submitted",
    "dkim",
    "spf",
    "dmarc",
    "trusted",
    "trust_reason",
    "unsigned_headers",
    "hidden_text",
    "risk",
    "risk_reasons",
    "mailbox",
    "read",
    "read_at",
    "labels",
    "attachments",
)

#: Every known key in canonical order: the inbound keys, with the keys only
#: sent copies carry after C{labels}.
KEY_ORDER = INBOUND_ORDER[:-1] + (
    "outbound",
    "outbound_format",
    "delivery_status",
    "bcc",
    "delivered_at",
    "delivery_details",
    "delivery",
    "attachments",
)

_RANK = {key: rank for rank, key in enumerate(KEY_ORDER)}
_TABLE_KEYS = frozenset({"attachments", "delivery"})


def render(fields: Mapping[str, Any], body: str) -> bytes:
    """A complete file: C{+++}, the TOML, C{+++}, an empty line, the body.

    Keys go in L{KEY_ORDER}, unknown keys after the known scalar keys;
    values that are L{None} or empty lists are left out (callers pass
    L{None} for an absent optional key).

    @param fields: the frontmatter values.
    @param body: the message body; a final newline is added if missing.
    @return: the file's bytes.
    """
    return b"".join((_frontmatter(fields), b"\n", body_bytes(body)))


def body_bytes(body: str) -> bytes:
    """The body as L{render} writes it: UTF-8, ending in a newline."""
    return (body if body.endswith("\n") else body + "\n").encode("utf-8")


def split(data: bytes) -> tuple[str, bytes]:
    """Split a file into its TOML text and everything after the closing line.

    The delimiters are whole C{+++} lines, never substrings; a C{+++} line
    inside a multi-line TOML string (as AIMX may write) is skipped, up to
    C{CLOSING_TRIES - 1} of them.

    @param data: the file's bytes.
    @return: the TOML text and the bytes after the closing C{+++} line
        (the blank separator line and the body, exactly).
    @raise ValueError: the file has no frontmatter or it is not TOML.
    """
    _, text, end = _locate(data)
    return text, data[end:]


def parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Parse a file into its fields and its body.

    @param data: the file's bytes.
    @return: the frontmatter as a dict and the body (the bytes after the
        closing C{+++} line without the one separating empty line).
    @raise ValueError: the file has no frontmatter or it is not TOML.
    """
    fields, _, end = _locate(data)
    if data.startswith(b"\n", end):
        end += 1
    return fields, data[end:]


def mark_read(data: bytes, now: datetime) -> bytes:
    """The file with C{read = true} and C{read_at = now}.

    @param data: the file's bytes.
    @param now: the time of marking.
    @return: the new bytes: frontmatter re-serialised in canonical order,
        unknown keys kept, the body bytes unchanged.
    @raise ValueError: the file has no frontmatter or it is not TOML.
    """
    fields, _, end = _locate(data)
    fields["read"] = True
    fields["read_at"] = rfc3339_utc_z(now)
    return _frontmatter(fields) + data[end:]


def mark_unread(data: bytes) -> bytes:
    """The file with C{read = false} and no C{read_at} key.

    @param data: the file's bytes.
    @return: the new bytes, as for L{mark_read}.
    @raise ValueError: the file has no frontmatter or it is not TOML.
    """
    fields, _, end = _locate(data)
    fields["read"] = False
    fields.pop("read_at", None)
    return _frontmatter(fields) + data[end:]


def with_attachment_dir(data: bytes, bundle_dir: str) -> bytes:
    """The file with each C{[[attachments]]} C{path} made absolute under C{bundle_dir}.

    Stored paths are relative to the bundle directory and are plain file names
    (docs/concepts.md); a C{path} that is not one (a C{/}, C{.} or C{..}, not a string) is
    left as written, so a hand-edited file cannot make it name a file outside the
    bundle.  What an agent reads then names files it can open as they are.

    @param data: the file's bytes.
    @param bundle_dir: the absolute directory the message file is in.
    @return: the new bytes (frontmatter re-serialised as by L{mark_read}, the body
        unchanged); C{data} itself when no path changes or there is no valid
        frontmatter.
    """
    try:
        fields, _, end = _locate(data)
    except (ValueError, UnicodeDecodeError):
        return data
    attachments = fields.get("attachments")
    if not isinstance(attachments, list):
        return data
    changed = False
    for entry in attachments:
        name = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(name, str) and name not in ("", ".", "..") and "/" not in name \
                and "\0" not in name:
            entry["path"] = posixpath.join(bundle_dir, name)
            changed = True
    return _frontmatter(fields) + data[end:] if changed else data


def inbound_fields(
    *,
    id: str,
    parsed: "ParsedMessage",
    delivered_to: str,
    date: str | None,
    received_at: str,
    received_from_ip: str | None,
    size_bytes: int,
    dkim: str,
    spf: str,
    dmarc: str,
    trusted: str,
    trust_reason: str | None = None,
    unsigned_headers: Sequence[str] = (),
    risk_reasons: Sequence[str] = (),
    mailbox: str,
    attachments: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The fields of a newly received message, in the canonical order.

    @param id: the file stem.
    @param parsed: the parsed message (its thread id, body hash and hidden-text
        count included: C{hidden_text = true} when it removed anything).
    @param delivered_to: the envelope recipient as given.
    @param date: C{parsed.date}, or the ingest time when that is L{None}
        (L{rfc3339_utc}); L{None} only if the caller fills it in later.
    @param received_at: the ingest time, L{rfc3339_utc}.
    @param received_from_ip: the SMTP peer; L{None} or the unspecified
        address (C{aimx ingest}) leaves the key out.
    @param size_bytes: the raw message length.
    @param dkim: C{pass}, C{fail} or C{none}.
    @param spf: C{pass}, C{fail}, C{softfail}, C{neutral} or C{none}.
    @param dmarc: C{pass}, C{fail} or C{none}.
    @param trusted: C{"true"}, C{"false"} or C{"none"}.
    @param trust_reason: why a message is not trusted (C{trusted = "false"}).
    @param unsigned_headers: fields a trusted copy leaves out because its
        signature does not cover them (L{aimx.core.trust.WITHHELD_UNLESS_SIGNED}).
    @param risk_reasons: why the copy needs review (L{aimx.core.risk}); when
        there are any, C{risk = "review"} is written before them.
    @param mailbox: the mailbox name.
    @param attachments: one mapping per stored attachment with
        C{filename}, C{content_type}, C{size} and C{path}.
    @return: the fields for L{render}; absent optional keys are L{None}.
    """
    return {
        "id": id,
        "message_id": parsed.message_id,
        "thread_id": parsed.thread_id,
        "from": parsed.from_,
        "to": parsed.to,
        "cc": parsed.cc,
        "reply_to": parsed.reply_to,
        "delivered_to": delivered_to,
        "subject": parsed.subject,
        "date": date,
        "received_at": received_at,
        "received_from_ip": _peer(received_from_ip),
        "size_bytes": size_bytes,
        "body_sha256": parsed.body_sha256,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "list_id": parsed.list_id,
        "auto_submitted": parsed.auto_submitted,
        "dkim": dkim,
        "spf": spf,
        "dmarc": dmarc,
        "trusted": trusted,
        "trust_reason": trust_reason,
        "unsigned_headers": list(unsigned_headers) or None,
        # Text a reader never sees was removed from the body (docs/concepts.md).
        "hidden_text": True if parsed.hidden_chars else None,
        # docs/guardrails.md, "Risk": hooks wait for a person unless fire_on_review.
        "risk": "review" if risk_reasons else None,
        "risk_reasons": list(risk_reasons) or None,
        "mailbox": mailbox,
        "read": False,
        "attachments": [
            {key: a[key] for key in ("filename", "content_type", "size", "path")}
            for a in attachments
        ]
        or None,
    }


def sent_fields(
    *,
    parsed: "ParsedMessage",
    delivered_to: str,
    date: str,
    size_bytes: int,
    mailbox: str,
    outbound_format: str,
    delivery_status: str,
    deliveries: Sequence[Mapping[str, str]],
    bcc: Sequence[str],
    delivered_at: str | None,
    delivery_details: str | None,
) -> dict[str, Any]:
    """The fields of a sent copy; C{id} and C{attachments} come at publishing.

    @param parsed: the headers of the message as it went out.
    @param date: its C{Date}, else the send time (L{rfc3339_utc}).
    @param deliveries: one C{rcpt}/C{status}/C{details} mapping per recipient.
    @param delivered_at: the send time when every recipient was delivered.
    @param delivery_details: the undelivered recipients' errors, one line.
    """
    return {
        "message_id": parsed.message_id,
        "thread_id": parsed.thread_id,
        "from": parsed.from_,
        "to": parsed.to,
        "cc": parsed.cc,
        "delivered_to": delivered_to,
        "subject": parsed.subject,
        "date": parsed.date or date,
        "size_bytes": size_bytes,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "dkim": "pass",
        "spf": "none",
        "dmarc": "none",
        "trusted": "none",
        "mailbox": mailbox,
        "read": False,
        "outbound": True,
        "outbound_format": outbound_format,
        "delivery_status": delivery_status,
        "bcc": list(bcc) or None,
        "delivered_at": delivered_at,
        "delivery_details": delivery_details,
        "delivery": [dict(d) for d in deliveries] or None,
    }


_READ_DEFAULTS = {
    "thread_id": "",
    "delivered_to": "",
    "received_at": "",
    "size_bytes": 0,
    "dkim": "none",
    "spf": "none",
    "dmarc": "none",
    "trusted": "none",
}


def with_defaults(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed fields with the defaults for keys older or foreign files lack.

    L{_READ_DEFAULTS} for every file, and C{outbound_format = "text"} on a sent copy.

    @param fields: fields from L{parse}.
    @return: a new dict with the missing keys filled in.
    """
    result = {**_READ_DEFAULTS, **fields}
    if result.get("outbound") is True:
        result.setdefault("outbound_format", "text")
    return result


def rfc3339_utc(when: datetime) -> str:
    """C{2025-04-15T12:30:23.512345+00:00}: UTC, microseconds when non-zero.

    The format of C{received_at}, C{delivered_at} and a missing C{date}.

    @param when: an aware datetime; a naive one is taken as UTC.
    """
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc).isoformat()
    return when.astimezone(timezone.utc).isoformat()


def rfc3339_utc_z(when: datetime) -> str:
    """C{2025-04-15T13:00:00.123456Z}: as L{rfc3339_utc} with C{Z}; for C{read_at}.

    @param when: an aware datetime; a naive one is taken as UTC.
    """
    return rfc3339_utc(when).removesuffix("+00:00") + "Z"


def _peer(address: str | None) -> str | None:
    try:
        if address is None or ipaddress.ip_address(address).is_unspecified:
            return None
    except ValueError:
        pass  # not an IP literal: recorded as given
    return address


def _frontmatter(fields: Mapping[str, Any]) -> bytes:
    """C{+++}, the TOML document, C{+++}, each line ending in LF."""
    present = [
        (key, value)
        for key, value in fields.items()
        if value is not None and not (isinstance(value, (list, tuple)) and not value)
    ]
    # sorted() is stable: unknown keys keep their order, after the known ones.
    present.sort(key=lambda item: _RANK.get(item[0], len(_RANK)))
    scalars = {}
    chunks = []
    for key, value in present:
        if key in _TABLE_KEYS and _plain_rows(value):
            for row in value:
                row = {k: v for k, v in row.items() if v is not None}
                chunks.append(f"\n[[{key}]]\n{tomli_w.dumps(row)}")
        else:
            scalars[key] = value
    return f"+++\n{tomli_w.dumps(scalars)}{''.join(chunks)}+++\n".encode("utf-8")


def _plain_rows(value: Any) -> bool:
    """Whether C{value} is a list of tables without nested tables or arrays,
    which we write as C{[[key]]} blocks ourselves: tomli_w would write short
    ones as an inline array.  Anything else is left to tomli_w."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(row, Mapping)
        and not any(isinstance(v, (Mapping, list, tuple)) for v in row.values())
        for row in value
    )


_DELIMITER = re.compile(rb"^\+\+\+\r?(?:\n|\Z)", re.MULTILINE)

#: How many C{+++} lines after the opening one L{_locate} tries as the closing
#: line.  aimx writes frontmatter with tomli_w, which never emits a multi-line
#: string, so the first one closes it; the others accept a C{+++} line inside a
#: multi-line string (as AIMX may write).  Each try parses the whole prefix, so
#: without this bound a planted file of many C{+++} lines would cost time
#: quadratic in its size; with it the cost is linear.
CLOSING_TRIES = 8


def _locate(data: bytes) -> tuple[dict[str, Any], str, int]:
    """The parsed frontmatter, its text, and the offset just past the
    closing delimiter line.

    @raise ValueError: no opening line, no closing line within
        L{CLOSING_TRIES} candidates, or the TOML is invalid.
    """
    delimiters = _DELIMITER.finditer(data)
    opening = next(delimiters, None)
    if opening is None or opening.start() != 0:
        raise ValueError("the file does not start with a +++ line")
    error: ValueError = ValueError("the frontmatter has no closing +++ line")
    for closing in itertools.islice(delimiters, CLOSING_TRIES):
        text = data[opening.end() : closing.start()].decode("utf-8")
        try:
            return tomllib.loads(text), text, closing.end()
        except tomllib.TOMLDecodeError as e:
            error = e  # maybe a +++ line inside a multi-line string: go on
    if next(delimiters, None) is not None:
        raise ValueError(f"no valid TOML frontmatter closes within the first {CLOSING_TRIES} "
                         "+++ lines")
    raise error
