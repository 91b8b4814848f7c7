"""What a webhook sends and when (L0, pure): secret, payload, signature, retry plan.

docs/hooks.md, "Webhooks".  Signing follows the Standard Webhooks specification
(standardwebhooks.com): the key is
the base64-decoded part of C{whsec_<base64>}; C{webhook-signature} is C{v1,}
and the base64 HMAC-SHA256 of C{"<webhook-id>.<webhook-timestamp>.<body>"}.
The C{webhook-id} is fixed when the event is queued and kept through every
retry (receivers de-duplicate on it); the timestamp and signature are made
afresh for each attempt (receivers refuse timestamps more than 5 minutes old).
"""

import base64
import binascii
import hashlib
import hmac
import json
import os.path
from collections.abc import Mapping
from typing import Any

from aimx.core.events import AFTER_SEND
from aimx.core.hookspec import HookEvent

SECRET_PREFIX = "whsec_"
#: Standard Webhooks: a secret of 24 to 64 random bytes.
SECRET_MIN, SECRET_MAX = 24, 64
#: The bytes a generated secret has.
SECRET_BYTES = 32
#: The most text a secret file may hold.
SECRET_FILE_CAP = 1024
#: Bodies longer than this many UTF-8 bytes are cut (C{body_truncated}).
BODY_CAP = 1 << 20
#: Bytes of a stored file read for a payload: the body cap and room for the frontmatter.
FILE_CAP = BODY_CAP + (256 << 10)
#: The largest payload: JSON may write each byte read as 6 (a control character
#: becomes C{\u0001}), plus room for the event's own fields.  A payload past it
#: is sent without the frontmatter (L{payload}).
PAYLOAD_CAP = 6 * FILE_CAP + (64 << 10)
#: Deliveries one webhook may have spooled, pending and dead (docs/hooks.md).
SPOOL_CAP = 10_000
#: Seconds a dead letter is kept before it expires: 7 days.
DEAD_TTL = 7 * 24 * 3600
#: The directory under the config dir (secrets) and under the data dir (the spool).
DIRECTORY = "webhooks"
#: Seconds to wait before attempt 2, 3, ... 8: about 5 s to 6 h, about 8.7 h in all.
RETRY_DELAYS = (5, 30, 180, 900, 3600, 10800, 21600)
ATTEMPTS = len(RETRY_DELAYS) + 1
#: What an attempt's answer means (L{outcome}).
DELIVERED, GONE, RETRY = "delivered", "gone", "retry"

_TYPES = {"on_receive": "email.received", AFTER_SEND: "email.sent"}
_SHARED = ("message_id", "thread_id", "from", "to", "subject", "date", "trusted", "dkim",
           "spf", "dmarc", "read")


class SecretError(ValueError):
    """A secret is not C{whsec_} followed by 24-64 bytes in base64."""


def parse_secret(text: str) -> bytes:
    """The HMAC key of a C{whsec_<base64>} secret (surrounding whitespace ignored).

    @raise SecretError: the text never says what the secret was.
    """
    text = text.strip()
    if not text.startswith(SECRET_PREFIX):
        raise SecretError(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"a webhook secret is {SECRET_PREFIX} then base64") from None
    if not SECRET_MIN <= len(key) <= SECRET_MAX:
        raise SecretError(f"a webhook secret holds {SECRET_MIN} to {SECRET_MAX} bytes, "
                          f"not {len(key)}")
    return key


def make_secret(random: bytes) -> str:
    """The C{whsec_} form of C{random} (L{SECRET_BYTES} bytes from C{os.urandom})."""
    return SECRET_PREFIX + base64.b64encode(random).decode("ascii")


def secret_path(config_dir: str, hook_name: str, secret_file: str | None) -> str:
    """Where a webhook's secret is: its C{secret_file}, else the one aimx keeps,
    C{<config_dir>/webhooks/<hook-name>.secret}."""
    return secret_file or os.path.join(config_dir, DIRECTORY, f"{hook_name}.secret")


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The C{webhook-signature} value of one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode("ascii") + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the three Standard Webhooks ones and the content type."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }


def webhook_id(event: HookEvent, hook_name: str) -> str:
    """The C{webhook-id} of one event for one hook: the same event, hook and stored
    file always give the same id, so even a re-queued event de-duplicates."""
    digest = hashlib.sha256("\x1f".join(
        (hook_name, event.event, event.mailbox.name, event.id, event.message_id, event.date)
    ).encode("utf-8", "surrogatepass")).hexdigest()
    return f"msg_{digest[:32]}"


def payload(event: HookEvent, fields: Mapping[str, Any] | None, body: bytes) -> bytes:
    """The JSON body of an event (docs/hooks.md, "Payload"), at most L{PAYLOAD_CAP}
    bytes: a frontmatter that would make it longer (only its owner can write one
    so) is left out, as if nothing was stored.

    @param fields: the stored file's frontmatter, or C{None} when nothing was stored
        (a deferred send): then the event's own values are sent.
    @param body: the stored Markdown body (cut here at L{BODY_CAP}).
    @raise ValueError: even without the frontmatter it is too long.
    """
    data = _payload(event, fields, body)
    if len(data) > PAYLOAD_CAP and fields is not None:
        data = _payload(event, None, body)
    if len(data) > PAYLOAD_CAP:
        raise ValueError(f"the payload is over {PAYLOAD_CAP} bytes")
    return data


def _payload(event: HookEvent, fields: Mapping[str, Any] | None, body: bytes) -> bytes:
    fields = dict(fields or {})
    data: dict[str, Any] = {"type": _TYPES[event.event], "mailbox": event.mailbox.name,
                            "id": event.id}
    fallback = {"message_id": event.message_id, "from": event.from_, "to": event.to,
                "subject": event.subject, "date": event.date}
    for key in _SHARED:
        data[key] = fields.get(key, fallback.get(key))
    data["attachments"] = [
        {key: a.get(key) for key in ("filename", "content_type", "size")}
        for a in fields.get("attachments") or () if isinstance(a, Mapping)
    ]
    text = body[:BODY_CAP].decode("utf-8", "ignore")
    data["body"] = text
    if len(body) > BODY_CAP:
        data["body_truncated"] = True
    if event.event == AFTER_SEND:
        data["delivery_status"] = fields.get("delivery_status", event.send_status)
        data["delivery"] = fields.get("delivery") or []
    data["frontmatter"] = fields
    return json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")


def outcome(code: int) -> str:
    """L{DELIVERED} for a 2xx answer, L{GONE} for 410, else L{RETRY}."""
    if 200 <= code < 300:
        return DELIVERED
    return GONE if code == 410 else RETRY


def retry_delay(attempts: int) -> float | None:
    """Seconds before the next attempt after C{attempts} failed ones; C{None}: dead-letter."""
    if attempts >= ATTEMPTS:
        return None
    return RETRY_DELAYS[attempts - 1]
