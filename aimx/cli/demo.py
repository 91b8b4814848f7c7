"""``aimx demo``: a throwaway aimx on 127.0.0.1 with real SMTP deliveries.

Everything lives in one scratch directory: a config for ``demo.localhost``, a DKIM
key, a self-signed certificate, the data dir, and a loopback DNS server that
publishes a demo sender's DKIM, SPF and DMARC records, so the stored mail shows
real verification results without touching real DNS.  No root needed.
"""

import datetime
import email.utils
import getpass
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from email import policy
from email.message import EmailMessage

from aimx.errors import AimxError
from aimx.store import keys
from aimx.testing import dkimkeys

DOMAIN = "demo.localhost"
SENDER_DOMAIN = "sender.localhost"
SELECTOR = "demo"


def _config(data_dir: str) -> str:
    user = getpass.getuser()
    return f"""domain = "{DOMAIN}"
data_dir = "{data_dir}"
trust = "verified"
trusted_senders = ["*@{SENDER_DOMAIN}"]

[mailboxes.agent]
address = "agent@{DOMAIN}"
owner = "{user}"

[mailboxes.catchall]
address = "*@{DOMAIN}"
owner = "{user}"
"""


def _messages(sender_key: bytes) -> list[bytes]:
    plain = EmailMessage()
    plain["From"] = f"Alice <alice@{SENDER_DOMAIN}>"
    plain["To"] = f"agent@{DOMAIN}"
    plain["Subject"] = "Hello from the demo"
    plain["Date"] = email.utils.formatdate(localtime=True)
    plain["Message-ID"] = f"<plain-{time.time_ns()}@{SENDER_DOMAIN}>"
    plain.set_content("Hi agent,\n\nthis is a plain text message, DKIM-signed.\n")

    html = EmailMessage()
    html["From"] = f"Newsletter <news@{SENDER_DOMAIN}>"
    html["To"] = f"agent@{DOMAIN}"
    html["Subject"] = "Weekly digest"
    html["Date"] = email.utils.formatdate(localtime=True)
    html["Message-ID"] = f"<html-{time.time_ns()}@{SENDER_DOMAIN}>"
    html.set_content(
        "<html><body><h1>Digest</h1><p>Three <b>things</b> happened.</p>"
        "<ul><li>one</li><li>two</li><li>three</li></ul></body></html>",
        subtype="html",
    )

    attach = EmailMessage()
    attach["From"] = f"Bob <bob@{SENDER_DOMAIN}>"
    attach["To"] = f"agent+reports@{DOMAIN}"
    attach["Subject"] = "Report attached"
    attach["Date"] = email.utils.formatdate(localtime=True)
    attach["Message-ID"] = f"<attach-{time.time_ns()}@{SENDER_DOMAIN}>"
    attach.set_content("The numbers are in the attached file.\n")
    attach.add_attachment(
        b"quarter,revenue\nQ1,10\nQ2,12\n", maintype="text", subtype="csv",
        filename="report.csv",
    )
    return [
        dkimkeys.sign_message(
            m.as_bytes(policy=policy.SMTP), private_pem=sender_key, selector=SELECTOR, domain=SENDER_DOMAIN
        )
        for m in (plain, html, attach)
    ]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, log: str | None = None):
    """Wait until C{proc} listens on C{port}; a process that exits says why (C{log})."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AimxError(f"{what} exited early ({_last_line(log, proc)})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AimxError(f"{what} did not start listening on 127.0.0.1:{port}")


def _check_free(port: int):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise AimxError(
                f"127.0.0.1:{port} is already in use; pick another port with "
                f"`make demo PORT=2600` or `aimx demo --port 2600`"
            ) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(port: int, raw: bytes, rcpt: str):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the demo certificate is self-signed
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.localhost")
        client.starttls(context=context)
        client.ehlo("client.localhost")
        client.sendmail(f"alice@{SENDER_DOMAIN}", [rcpt], raw)


def _reply(run_dir: str, data: str, remote: str):
    """The agent answers Alice: SEND over the control socket, as `aimx send` does."""
    import asyncio

    from aimx.control import aioclient, commands
    from aimx.core.compose import compose

    message = compose(
        from_=f"agent@{DOMAIN}", to=[f"alice@{SENDER_DOMAIN}"], subject="Re: Hello from the demo",
        body="Thanks Alice, **got it**.\n\n- read\n- answered\n",
        now=datetime.datetime.now(datetime.timezone.utc),
    )
    client = aioclient.ControlClient(os.path.join(run_dir, "aimx.sock"))
    try:
        reply = asyncio.run(client.call(commands.Send, message=message))
    except AimxError as e:
        raise AimxError(f"demo send failed: [{e.code}] {e}") from None
    print(f"The agent replied (same as `aimx send --from agent@{DOMAIN} "
          f"--to alice@{SENDER_DOMAIN} --subject ... --body ...`):")
    print(f"  {reply['message_id']} delivered to mx.{SENDER_DOMAIN}, DKIM-signed, "
          "Markdown sent as text + HTML.\n")
    [received] = sorted(os.listdir(remote))
    with open(os.path.join(remote, received), "rb") as f:
        head = f.read().split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    print(f"--- what the remote server received ({os.path.join(remote, received)}), headers ---")
    print(head + "\n")
    sent = os.path.join(data, "sent", "agent")
    [copy] = sorted(n for n in os.listdir(sent) if n.endswith(".md"))
    print(f"--- the sent copy, {os.path.join(sent, copy)} ---")
    with open(os.path.join(sent, copy), encoding="utf-8") as f:
        print(f.read())


def _tree(root: str) -> list[str]:
    lines = []
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        depth = directory[len(root) :].count(os.sep)
        lines.append("  " * depth + os.path.basename(directory) + "/")
        lines += ["  " * (depth + 1) + f for f in sorted(files)]
    return lines


def _why_exited(daemon: subprocess.Popen, base: str) -> str:
    """When the daemon has died, its last log line (the reason it gave), else C{""}.

    A delivery can fail while a daemon that is shutting down is still exiting.
    """
    try:
        daemon.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    return f"; aimx exited ({_last_line(os.path.join(base, 'aimx.log'), daemon)})"


def _last_line(log: str | None, proc: subprocess.Popen) -> str:
    """The last line of a dead process's log, else its exit status."""
    lines = []
    if log is not None:
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            pass
    return lines[-1] if lines else f"status {proc.returncode}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    _check_free(args.port)
    base = args.dir or tempfile.mkdtemp(prefix="aimx-demo-")
    etc, data, run_dir = (os.path.join(base, d) for d in ("etc", "data", "run"))
    for d in (etc, data, run_dir):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(etc, "config.toml"), "w") as f:
        f.write(_config(data))
    keys.generate_dkim_key(etc, force=True)
    cert, key = os.path.join(base, "tls", "cert.pem"), os.path.join(base, "tls", "key.pem")
    keys.generate_self_signed(cert, key, DOMAIN)
    sender_key, sender_txt = dkimkeys.generate_key()

    dns_port, mx_port = _free_port(), _free_port()
    dns = subprocess.Popen(
        [sys.executable, "-m", "aimx.testing.dns", "--port", str(dns_port),
         "--txt", f"{SELECTOR}._domainkey.{SENDER_DOMAIN}={sender_txt}",
         "--txt", f"{SENDER_DOMAIN}=v=spf1 ip4:127.0.0.1 -all",
         "--txt", f"_dmarc.{SENDER_DOMAIN}=v=DMARC1; p=reject",
         "--mx", f"{SENDER_DOMAIN}=mx.{SENDER_DOMAIN}", "--a", f"mx.{SENDER_DOMAIN}=127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    # The sender's mail server: a loopback receiver that keeps what it is given.
    remote = os.path.join(base, "remote-mx")
    mx = subprocess.Popen(
        [sys.executable, "-m", "aimx.testing.smtpsink", "--port", str(mx_port), "--dir", remote]
    )
    env = dict(os.environ, AIMX_NAMESERVERS=f"127.0.0.1:{dns_port}",
               AIMX_SMTP_OUT_PORT=str(mx_port))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aimx", "serve", "--bind", f"127.0.0.1:{args.port}",
         "--config-dir", etc, "--data-dir", data, "--runtime-dir", run_dir,
         "--tls-cert", cert, "--tls-key", key],
        env=env,
        stderr=open(os.path.join(base, "aimx.log"), "ab"),
    )
    try:
        _wait_for_port(dns_port, dns, "the demo DNS server")
        _wait_for_port(mx_port, mx, "the demo's remote mail server")
        log = os.path.join(base, "aimx.log")
        _wait_for_port(args.port, daemon, f"aimx (log: {log})", log)
        rcpts = [f"agent@{DOMAIN}", f"agent@{DOMAIN}", f"agent+reports@{DOMAIN}"]
        for raw, rcpt in zip(_messages(sender_key), rcpts):
            try:
                _send(args.port, raw, rcpt)
            except (OSError, smtplib.SMTPException) as e:
                raise AimxError(
                    f"demo delivery failed: {e}{_why_exited(daemon, base)} "
                    f"(log: {base}/aimx.log)"
                ) from None
        inbox = os.path.join(data, "inbox", "agent")
        print(f"Delivered 3 messages over SMTP+STARTTLS to 127.0.0.1:{args.port}.\n")
        print("\n".join(_tree(os.path.join(data, "inbox"))))
        first = sorted(n for n in os.listdir(inbox) if n.endswith(".md"))[0]
        print(f"\n--- {os.path.join(inbox, first)} ---")
        with open(os.path.join(inbox, first), encoding="utf-8") as f:
            print(f.read())
        _reply(run_dir, data, remote)
        if args.no_wait:
            return 0
        print(
            f"aimx is serving {DOMAIN} on 127.0.0.1:{args.port} (data: {data}, log: "
            f"{base}/aimx.log); Ctrl-C stops it. Send more with:\n  python3 -c "
            f"\"import smtplib; smtplib.SMTP('127.0.0.1', {args.port}).sendmail("
            f"'me@example.test', ['agent@{DOMAIN}'], 'Subject: hi\\n\\nhello')\"\n"
            f"Manage it from another shell with:\n  AIMX_RUNTIME_DIR={run_dir} "
            f"AIMX_CONFIG_DIR={etc} .venv/bin/aimx mailboxes list\n"
            f"and send as the agent (as yourself, not root) with:\n  AIMX_RUNTIME_DIR={run_dir} "
            f".venv/bin/aimx send --from agent@{DOMAIN} --to bob@{SENDER_DOMAIN} "
            f"--subject hi --body '**hello**'   (lands in {remote})\n"
            f"and wire an AI agent to it (e.g. Claude Code) with:\n  AIMX_RUNTIME_DIR={run_dir} "
            f".venv/bin/aimx agents setup claude-code"
        )
        daemon.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (daemon, dns, mx):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=35)
