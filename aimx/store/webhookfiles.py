"""Webhook secrets and the delivery spool on disk (L1, blocking; run in a thread).

Secrets: C{<config_dir>/webhooks/<hook-name>.secret}, 0600 in a 0700 directory,
written atomically (L{safefs.replace_path}); read back at each attempt, at most
L{webhook.SECRET_FILE_CAP} bytes.  The spool: C{<data_dir>/webhooks/}, 0700,
one 0600 file per pending or dead-lettered delivery, named by its
C{webhook-id}, replaced atomically at every change (docs/hooks.md, "Webhooks"):
one line of JSON, the delivery's state (at most L{STATE_CAP} bytes), then the
payload as sent (at most L{webhook.PAYLOAD_CAP} bytes).  The daemon keeps the
states in memory and reads a payload at each attempt.
"""

import json
import os

from aimx.core import webhook
from aimx.store import safefs

#: Bytes of a spool file's state line.
STATE_CAP = 64 << 10


def _directory(parent: str) -> str:
    path = os.path.join(parent, webhook.DIRECTORY)
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_secret(config_dir: str, hook_name: str, key: bytes) -> str:
    """Store a webhook's key as C{whsec_<base64>} where aimx keeps it; return the path."""
    path = os.path.join(_directory(config_dir), f"{hook_name}.secret")
    safefs.replace_path(path, (webhook.make_secret(key) + "\n").encode("ascii"), mode=0o600)
    return path


def remove_secret(config_dir: str, hook_name: str) -> None:
    """Remove the secret aimx keeps for a hook, if any."""
    try:
        os.unlink(webhook.secret_path(config_dir, hook_name, None))
    except FileNotFoundError:
        pass


def read_secret(path: str) -> bytes:
    """The HMAC key in the secret file at C{path}.

    @raise OSError: the file cannot be read.
    @raise webhook.SecretError: it does not hold a C{whsec_} secret.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = safefs.read_up_to(fd, webhook.SECRET_FILE_CAP)
    finally:
        os.close(fd)
    return webhook.parse_secret(data.decode("ascii", "replace"))


def _spooled(data_dir: str, webhook_id: str) -> str:
    return os.path.join(data_dir, webhook.DIRECTORY, f"{webhook_id}.json")


def save(data_dir: str, delivery: dict, payload: bytes | None = None) -> None:
    """Write (or replace) one delivery's spool file, durably.

    @param payload: the payload; C{None}: the one the file holds.
    """
    if payload is None:
        payload = read_payload(data_dir, delivery["id"])
    state = json.dumps(delivery).encode("utf-8")
    if len(state) > STATE_CAP:
        raise ValueError(f"a webhook delivery's state is over {STATE_CAP} bytes")
    path = os.path.join(_directory(data_dir), f"{delivery['id']}.json")
    safefs.replace_path(path, state + b"\n" + payload, mode=0o600)


def read_payload(data_dir: str, webhook_id: str) -> bytes:
    """One delivery's payload.

    @raise OSError: the file cannot be read (C{FileNotFoundError}: it is gone).
    @raise ValueError: it is not a spool file.
    """
    fd = os.open(_spooled(data_dir, webhook_id),
                 os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = safefs.read_up_to(fd, STATE_CAP + 1 + webhook.PAYLOAD_CAP + 1)
    finally:
        os.close(fd)
    state, newline, payload = data.partition(b"\n")
    if not newline or len(state) > STATE_CAP or len(payload) > webhook.PAYLOAD_CAP:
        raise ValueError("not a webhook spool file")
    return payload


def discard(data_dir: str, webhook_id: str) -> None:
    """Remove one delivery's spool file (gone already is fine)."""
    try:
        os.unlink(_spooled(data_dir, webhook_id))
    except FileNotFoundError:
        pass


def load(data_dir: str) -> tuple[list[dict], list[str]]:
    """Every delivery's state in the spool (never its payload).

    @return: the deliveries, oldest first, and the names of the files that are
        not spool files (left in place).
    """
    found, skipped = [], []
    with safefs.directory(_directory(data_dir)) as fd:
        for name, kind in safefs.scan(fd):
            if kind != safefs.FILE or not name.endswith(".json") or name.startswith("."):
                continue
            opened = safefs.open_regular(fd, name)
            if opened is None:
                continue
            entry, _ = opened
            try:
                state, newline, _ = safefs.read_up_to(entry, STATE_CAP + 1).partition(b"\n")
                delivery = json.loads(state) if newline else None
            except ValueError:
                delivery = None
            finally:
                os.close(entry)
            if isinstance(delivery, dict) and delivery.get("id") == name[:-5]:
                found.append(delivery)
            else:
                skipped.append(name)
    return sorted(found, key=lambda d: d.get("created", 0)), skipped


def discard_hook(data_dir: str, hook_name: str) -> list[str]:
    """Remove every spool file of the hook C{hook_name}, pending or dead.

    @return: the removed deliveries' C{webhook-id}s.
    """
    removed = []
    for delivery in load(data_dir)[0]:
        if delivery.get("hook") == hook_name:
            discard(data_dir, delivery["id"])
            removed.append(delivery["id"])
    return removed
