"""``aimx demo``: a throwaway aimx on 127.0.0.1 with real SMTP deliveries (L3).

Everything lives in one scratch directory: a config for ``demo.localhost``, a DKIM
key, a self-signed certificate, the data dir, the daemon's log, and a loopback DNS
server that publishes the records of ``demo.localhost`` (the ones ``aimx setup``
asks for, pointing at 127.0.0.1) and of a sender domain, ``sender.localhost``
(DKIM, SPF, DMARC, an MX that is a loopback receiver), so the stored mail shows real
verification results without touching real DNS.  No root needed.

Once the daemon is ready (its pid file is written, after every listener is bound;
the port it bound, the real one for C{--port 0}, is read from its log), the demo
writes its state file (L{aimx.store.demo}) into its runtime directory.  The
commands it prints carry that directory in C{AIMX_RUNTIME_DIR} (and the config
directory in C{AIMX_CONFIG_DIR}), so each one works on its own when pasted into
another shell: C{aimx demo send} finds the demo there and delivers a message
DKIM-signed by the sender domain (trusted, so hooks fire), C{aimx doctor} checks
the demo as its daemon runs and C{aimx logs} shows the demo's log.

The demo's mailboxes belong to the user who runs it.  Run as root, they go to the
user behind C{sudo} or else to C{nobody}: never to root, whose hooks would run as
root and whose mailboxes the CLI itself never creates.
"""

import email.utils
import json
import os
import shlex
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

from aimx.agents import mcpcommand
from aimx.ops import bind
from aimx.ops.dnscheck import MX, ExpectedDns
from aimx.core import frontmatter
from aimx.core.identity import parse_address_list
from aimx.errors import AimxError
from aimx.store import demo as state_file
from aimx.store import keys, passwd, safefs
from aimx.store.mailboxdirs import create_dirs
from aimx.loopback import DEMO_DOMAIN as DOMAIN
from aimx.loopback import SENDER_DOMAIN
from aimx.loopback import keys as dkimkeys

SELECTOR = "demo"
#: The demo's own DKIM selector (config.toml's default).
DKIM_SELECTOR = "aimx"
HOST = "127.0.0.1"
MAILBOXES = ("agent", "catchall")
#: The hook the demo suggests: its stderr lands in the daemon's log.
HOOK_CMD = ["/bin/sh", "-c", 'echo "hook fired: $AIMX_SUBJECT" >&2']


def run(args) -> int:
    """C{aimx demo} or C{aimx demo send}; the exit code."""
    if getattr(args, "demo_verb", None) == "send":
        return send_main(args, os.environ)
    return serve(args)


# -- the demo ------------------------------------------------------------------


def _config(data_dir: str, owner: str) -> str:
    mailboxes = "".join(
        f'\n[mailboxes.{name}]\naddress = "{"*" if name == "catchall" else name}@{DOMAIN}"\n'
        f'owner = "{owner}"\n'
        for name in MAILBOXES
    )
    return f"""domain = "{DOMAIN}"
data_dir = "{data_dir}"
trust = "verified"
trusted_senders = ["*@{SENDER_DOMAIN}"]
{mailboxes}"""


def _owner(environ) -> str:
    """Who owns the demo's mailboxes, and so runs its hooks: the caller; for root, the
    user behind sudo, else C{nobody} (root only when neither exists)."""
    euid = os.geteuid()
    if euid != 0:
        name = passwd.username(euid)
        if name is None:
            raise AimxError(f"uid {euid} has no passwd entry to own the demo's mailboxes")
        return name
    for name in (environ.get("SUDO_USER"), "nobody"):
        if name and name != "root" and passwd.owner(name).uid is not None:
            return name
    return "root"


def _message(tag: str, name: str, local: str, to: str, subject: str) -> EmailMessage:
    """A demo message's header: from C{name <local@>} the demo's sender domain, dated now."""
    message = EmailMessage()
    message["From"] = f"{name} <{local}@{SENDER_DOMAIN}>"
    message["To"] = f"{to}@{DOMAIN}"
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = f"<{tag}-{time.time_ns()}@{SENDER_DOMAIN}>"
    return message


def _messages(sender_key: bytes) -> list[bytes]:
    plain = _message("plain", "Alice", "alice", "agent", "Hello from the demo")
    plain.set_content("Hi agent,\n\nthis is a plain text message, DKIM-signed.\n")
    html = _message("html", "Newsletter", "news", "agent", "Weekly digest")
    html.set_content(
        "<html><body><h1>Digest</h1><p>Three <b>things</b> happened.</p>"
        "<ul><li>one</li><li>two</li><li>three</li></ul></body></html>",
        subtype="html",
    )
    attach = _message("attach", "Bob", "bob", "agent+reports", "Report attached")
    attach.set_content("The numbers are in the attached file.\n")
    attach.add_attachment(
        b"quarter,revenue\nQ1,10\nQ2,12\n", maintype="text", subtype="csv",
        filename="report.csv",
    )
    return [_signed(m, sender_key, SELECTOR, SENDER_DOMAIN) for m in (plain, html, attach)]


def _signed(message: EmailMessage, key: bytes, selector: str, domain: str) -> bytes:
    return dkimkeys.sign_message(message.as_bytes(policy=policy.SMTP), private_pem=key,
                                 selector=selector, domain=domain)


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, log: str | None = None):
    """Wait until C{proc} listens on C{port}; a process that exits says why (C{log})."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AimxError(f"{what} exited early ({_last_line(log, proc)})")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AimxError(f"{what} did not start listening on {HOST}:{port}")


def _wait_until_ready(proc: subprocess.Popen, run_dir: str, log: str) -> int:
    """Wait until the daemon C{proc} is ready: its pid in C{aimx.pid}, written once every
    listener is bound; the SMTP port its log says it bound (the real one for port 0)."""
    pid_file = os.path.join(run_dir, bind.PID_NAME)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AimxError(f"aimx (log: {log}) exited early ({_last_line(log, proc)})")
        if _pid_in(pid_file) == proc.pid:
            with open(log, encoding="utf-8", errors="replace") as f:
                addresses = bind.logged_addresses(f.read())
            if not addresses:
                raise AimxError(f"aimx (log: {log}) logged no SMTP address")
            return bind.split_address(addresses[0])[1]
        time.sleep(0.05)
    raise AimxError(f"aimx (log: {log}) was not ready within 20 s")


def _pid_in(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _daemon_environment(dns_port: int, mx_port: int) -> dict[str, str]:
    """What the demo daemon runs with: L{state_file.DemoState.environment}, which the
    state file gives later commands, before the state exists (it needs the bound port)."""
    return {"AIMX_NAMESERVERS": f"{HOST}:{dns_port}", "AIMX_SMTP_OUT_PORT": str(mx_port)}


def _check_free(port: int):
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise AimxError(
                f"{HOST}:{port} is already in use; pick another port with "
                f"`make demo PORT=2600` or `aimx demo --port 2600`"
            ) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _smtp(port: int, raw: bytes, mail_from: str, rcpts: list[str]) -> dict:
    """Deliver C{raw} over SMTP with STARTTLS; the refused recipients (smtplib's dict)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the demo certificate is self-signed
    with smtplib.SMTP(HOST, port, timeout=30) as client:
        client.ehlo("client.localhost")
        client.starttls(context=context)
        client.ehlo("client.localhost")
        return client.sendmail(mail_from, rcpts, raw)


def _reply(run_dir: str, data: str, remote: str, message_id: str):
    """The agent answers Alice's message C{message_id}: SEND over the control socket, as
    `aimx send --in-reply-to` does, so `aimx mail thread` shows the two together."""
    import datetime

    from aimx.control import blockingclient, wire
    from aimx.core.compose import compose

    message = compose(
        from_=f"agent@{DOMAIN}", to=[f"alice@{SENDER_DOMAIN}"], subject="Re: Hello from the demo",
        body="Thanks Alice, **got it**.\n\n- read\n- answered\n", reply_to=message_id,
        now=datetime.datetime.now(datetime.timezone.utc),
    )
    try:
        connection = blockingclient.connect(os.path.join(run_dir, wire.SOCKET_NAME))
        try:
            reply = connection.call(wire.Send, message=message)
        finally:
            connection.close()
    except AimxError as e:
        raise AimxError(f"demo send failed: [{e.code}] {e}") from None
    print(f"The agent replied (same as `aimx send --from agent@{DOMAIN} "
          f"--to alice@{SENDER_DOMAIN} --in-reply-to {message_id} --subject ... --body ...`):")
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


def _why_exited(daemon: subprocess.Popen, log: str) -> str:
    """When the daemon has died, its last log line (the reason it gave), else C{""}.

    A delivery can fail while a daemon that is shutting down is still exiting.
    """
    try:
        daemon.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    return f"; aimx exited ({_last_line(log, daemon)})"


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


def _dns_records(etc: str, sender_txt: str, mx_host: str) -> list[str]:
    """The demo DNS server's arguments: what C{aimx setup} would have the operator publish
    for demo.localhost (at 127.0.0.1), and the sender domain's DKIM, SPF, DMARC and MX."""
    own = ExpectedDns(domain=DOMAIN, ipv4=HOST, ipv6=None, selector=DKIM_SELECTOR,
                      dkim_key=keys.local_public_key_b64(etc))
    argv = []
    for record in own.records():
        if record.type == MX:
            argv += ["--mx", f"{record.name}={record.value.split()[1].rstrip('.')}"]
        else:
            argv += [f"--{record.type.lower()}", f"{record.name}={record.value}"]
    return argv + [
        "--txt", f"{SELECTOR}._domainkey.{SENDER_DOMAIN}={sender_txt}",
        "--txt", f"{SENDER_DOMAIN}=v=spf1 ip4:{HOST} -all",
        "--txt", f"_dmarc.{SENDER_DOMAIN}=v=DMARC1; p=reject",
        "--mx", f"{SENDER_DOMAIN}={mx_host}", "--a", f"{mx_host}={HOST}",
    ]


def _write(path: str, data: bytes, mode: int) -> None:
    """Create or replace C{path} atomically with C{data}, mode C{mode} whatever the umask."""
    safefs.replace_path(path, data, mode=mode, durable=False)


def serve(args) -> int:
    """Set the demo up, deliver and reply, print what to try, serve until Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)
    if args.port:
        _check_free(args.port)
    owner = _owner(os.environ)
    ids = passwd.owner(owner)
    shared = ids.uid != os.geteuid()
    base = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="aimx-demo-"))
    etc, data, run_dir = (os.path.join(base, d) for d in ("etc", "data", "run"))
    for d in (base, etc, run_dir, os.path.join(data, "inbox"), os.path.join(data, "sent")):
        os.makedirs(d, exist_ok=True)
        if shared:
            # Another user owns the mailboxes: their hooks start in data/inbox/<box>, and
            # they may run the printed commands (the socket, the log, the sender key).
            os.chmod(d, 0o755)
    if shared:
        os.chmod(data, 0o755)
    # Mode 0640, as the daemon writes it on every edit (docs/security.md).
    _write(os.path.join(etc, "config.toml"), _config(data, owner).encode(), 0o640)
    for name in MAILBOXES:
        create_dirs(data, name, ids)
    keys.generate_dkim_key(etc, force=True)
    cert, key = os.path.join(base, "tls", "cert.pem"), os.path.join(base, "tls", "key.pem")
    keys.generate_self_signed(cert, key, DOMAIN)
    sender_key, sender_txt = dkimkeys.generate_key()
    # `aimx demo send` signs with it: readable by the mailbox owner and root only.
    sender_key_path = os.path.join(base, "sender.key")
    _write(sender_key_path, sender_key, 0o600)
    os.chown(sender_key_path, ids.uid, ids.gid)
    log = os.path.join(base, "aimx.log")
    _write(log, b"", 0o644)

    dns_port, mx_port = _free_port(), _free_port()
    dns = subprocess.Popen(
        [sys.executable, "-m", "aimx.loopback.dns", "--port", str(dns_port),
         *_dns_records(etc, sender_txt, f"mx.{SENDER_DOMAIN}")],
        stdout=subprocess.DEVNULL,
    )
    # The sender's mail server: a loopback receiver that keeps what it is given.
    remote = os.path.join(base, "remote-mx")
    mx = subprocess.Popen(
        [sys.executable, "-m", "aimx.loopback.smtpsink", "--port", str(mx_port), "--dir", remote]
    )
    with open(log, "ab") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aimx", "serve", "--bind", f"{HOST}:{args.port}",
             "--config-dir", etc, "--data-dir", data, "--runtime-dir", run_dir,
             "--tls-cert", cert, "--tls-key", key],
            env=dict(os.environ, **_daemon_environment(dns_port, mx_port)),
            stderr=log_file,
        )
    try:
        _wait_for_port(dns_port, dns, "the demo DNS server")
        _wait_for_port(mx_port, mx, "the demo's remote mail server")
        port = _wait_until_ready(daemon, run_dir, log)
        state = state_file.DemoState(
            domain=DOMAIN, host=HOST, port=port, dns_port=dns_port, mx_port=mx_port,
            sender_domain=SENDER_DOMAIN, selector=SELECTOR, sender_key=sender_key_path,
            config_dir=etc, data_dir=data, log=log, directory=base,
        )
        state_file.write(run_dir, state)
        rcpts = [f"agent@{DOMAIN}", f"agent@{DOMAIN}", f"agent+reports@{DOMAIN}"]
        for raw, rcpt in zip(_messages(sender_key), rcpts):
            try:
                _smtp(port, raw, f"alice@{SENDER_DOMAIN}", [rcpt])
            except (OSError, smtplib.SMTPException) as e:
                raise AimxError(
                    f"demo delivery failed: {e}{_why_exited(daemon, log)} (log: {log})"
                ) from None
        inbox = os.path.join(data, "inbox", "agent")
        print(f"Delivered 3 messages over SMTP+STARTTLS to {state.smtp}.\n")
        print("\n".join(_tree(os.path.join(data, "inbox"))))
        first = sorted(n for n in os.listdir(inbox) if n.endswith(".md"))[0]
        print(f"\n--- {os.path.join(inbox, first)} ---")
        with open(os.path.join(inbox, first), encoding="utf-8") as f:
            text = f.read()
        print(text)
        _reply(run_dir, data, remote, frontmatter.parse(text.encode())[0]["message_id"])
        if args.no_wait:
            return 0
        print(what_to_try(state, run_dir, owner, _program(), os.geteuid() == 0), flush=True)
        daemon.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (daemon, dns, mx):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=35)


def _program() -> str:
    """The shell words that start this aimx from anywhere: its console script, else
    C{python -m aimx}, with C{PYTHONPATH} when this aimx is a checkout (not installed)."""
    import site

    import aimx

    program = mcpcommand.program(sys.argv[0], sys.executable, os.environ.get("PATH"))
    words = shlex.join(program)
    root = os.path.dirname(os.path.dirname(os.path.abspath(aimx.__file__)))
    installed = {os.path.abspath(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
    if program[1:] == ("-m", "aimx") and root not in installed:
        words = f"PYTHONPATH={shlex.quote(root)} {words}"
    return words


def _me() -> str:
    return passwd.username(os.geteuid()) or f"uid {os.geteuid()}"


def what_to_try(state: state_file.DemoState, run_dir: str, owner: str, program: str,
                root: bool, me: str | None = None) -> str:
    """The closing text: where the demo is, and commands that each work on their own.

    Every command line starts with the demo's two directories (and C{program}, the
    shell words that start aimx), so it needs nothing from the shell it is pasted
    into; comment lines start with C{#}.  When root runs the demo, a command only
    root may run (doctor reads the root-only config) follows a comment starting
    C{# as root:}.

    @param root: the demo runs as root.
    @param me: the user running it (default: this process's).
    """
    me = me or _me()
    aimx = (f"AIMX_CONFIG_DIR={shlex.quote(state.config_dir)} "
            f"AIMX_RUNTIME_DIR={shlex.quote(run_dir)} {program}")
    remote = os.path.join(state.directory, "remote-mx")
    if me == owner:
        who = f"as {' or '.join(dict.fromkeys([me, 'root']))}; each command works on its own:"
    else:
        who = (f"as {me}, or as {owner} (the mailboxes' owner) except where it says "
               f"\"as root\"; each command works on its own:")
    lines = [
        f"aimx is serving {DOMAIN} on {state.smtp}.",
        f"  demo directory: {state.directory} (config in etc/, mail in data/, "
        "log in aimx.log)",
        f"  mailbox owner:  {owner} (hooks run as {owner})",
        "",
        f"Try it from another shell, {who}",
        "",
        "  # your mailboxes and their mail",
        f"  {aimx} mailboxes list",
        "",
        "  # agent's inbox, newest first; then `mail read agent ID` (--extracted: the new",
        "  # text only) and `mail thread agent ID` (the conversation, with the reply sent)",
        f"  {aimx} mail list agent",
        "",
        "  # every message of agent, received or sent, with these words",
        f"  {aimx} mail search agent hello",
        "",
        f"  # a hook: each trusted message to agent@{DOMAIN} puts its subject in the log",
        f"  {aimx} hooks create --mailbox agent --event on_receive --cmd "
        + shlex.quote(json.dumps(HOOK_CMD)),
        "",
        f"  # one more message, DKIM-signed by {SENDER_DOMAIN}: trusted, so the hook fires",
        f"  {aimx} demo send --from carol@{SENDER_DOMAIN} --subject 'Hello again' "
        "--body 'Did the hook fire?'",
        "",
        f"  # answer as the agent; the sender's mail server keeps it in {remote}",
        f"  {aimx} send --from agent@{DOMAIN} --to carol@{SENDER_DOMAIN} "
        "--subject 'Re: Hello again' --body '**It did.**'",
        "",
        "  # as root: check the installation (config.toml is root's, mode 0640)" if root
        else "  # check the installation",
        f"  {aimx} doctor",
        "",
        "  # the daemon's log (the hook's line is there)",
        f"  {aimx} logs",
        "",
    ]
    if root:
        lines += [
            "  # AI agents are wired per user: as the user your agent runs as, run",
            "  # `aimx agents setup claude-code` with the two variables above",
            "  # (root's own agent needs --dangerously-allow-root)",
        ]
    else:
        lines += [
            "  # wire an AI agent (here Claude Code) to this demo",
            f"  {aimx} agents setup claude-code",
        ]
    return "\n".join(lines + ["", "Ctrl-C stops the demo."])


# -- aimx demo send --------------------------------------------------------------


def _sender(text: str, domain: str):
    """The parsed C{--from}: one plain address at the sender domain.

    @raise AimxError: anything else (the demo can sign for that domain only).
    """
    mailbox = parse_address_list(text).single
    if mailbox is None or not mailbox.plain or mailbox.domain_lower != domain:
        raise AimxError(
            f"--from must be one address at {domain} (the demo signs for that domain "
            f"only), not {text!r}"
        )
    return mailbox


def send_main(args, environ) -> int:
    """C{aimx demo send}: sign a message as the sender domain, deliver it to the demo."""
    from aimx.control.wire import socket_path

    run_dir = os.path.dirname(socket_path(environ))
    state = state_file.read(run_dir)
    if state is None:
        raise AimxError(
            f"no aimx demo in {run_dir} (no {state_file.STATE_FILE}); start one with "
            "`aimx demo` and paste the commands it prints (they set AIMX_RUNTIME_DIR)"
        )
    sender = _sender(args.sender, state.sender_domain)
    rcpts = []
    for text in args.to or [f"agent@{state.domain}"]:
        rcpt = parse_address_list(text).single
        if rcpt is None:
            raise AimxError(f"--to must be one address, not {text!r}")
        rcpts.append(rcpt)
    try:
        with open(state.sender_key, "rb") as f:
            key = f.read()
    except OSError as e:
        raise AimxError(
            f"cannot read the demo's sender key {state.sender_key}: {e.strerror}; run this "
            "as the demo's mailbox owner or root"
        ) from None
    message = EmailMessage(policy=policy.SMTP)
    try:
        message["From"] = sender.wire()
        message["To"] = ", ".join(r.wire() for r in rcpts)
        message["Subject"] = args.subject
        message["Date"] = email.utils.formatdate(localtime=True)
        message["Message-ID"] = email.utils.make_msgid(domain=state.sender_domain)
        message.set_content(args.body)
    except ValueError as e:
        raise AimxError(f"cannot compose the message: {e}") from None
    raw = _signed(message, key, state.selector, state.sender_domain)
    try:
        refused = _smtp(state.port, raw, sender.addr_spec, [r.addr_spec for r in rcpts])
    except smtplib.SMTPRecipientsRefused as e:
        refused = e.recipients
    except smtplib.SMTPResponseException as e:
        raise AimxError(f"the demo answered {e.smtp_code} "
                        f"{e.smtp_error.decode('utf-8', 'replace')}") from None
    except (OSError, smtplib.SMTPException) as e:
        raise AimxError(
            f"the demo is not answering on {state.smtp} ({e}); is `aimx demo` still running?"
        ) from None
    delivered = [r.addr_spec for r in rcpts if r.addr_spec not in refused]
    if delivered:
        print(f"Delivered {message['Message-ID']} to {', '.join(delivered)} over "
              f"SMTP+STARTTLS ({state.smtp}), DKIM-signed by {state.sender_domain}.")
    for rcpt, (code, text) in refused.items():
        print(f"Error: the demo refused {rcpt}: {code} {text.decode('utf-8', 'replace')}",
              file=sys.stderr)
    return 1 if refused else 0
