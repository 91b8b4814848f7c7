"""A private Postfix instance on loopback, configured from contrib/postfix-backup-mx
(integration test helper).

Its own config, queue and data directories in a temporary directory (C{postfix -c
DIR}), an smtpd on one loopback port, no chroot, no DNS, no local delivery, the log
in a file: it shares nothing with a system Postfix but the programs and the
C{postfix}/C{postdrop} accounts the Debian package made.  The shipped fragment and
maps are appended as they are, with the example domain, next hop and paths replaced,
so what is tested is what an operator installs.  Starting Postfix needs root.
"""

import json
import os
import shutil
import subprocess
import tempfile

CONTRIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "contrib", "postfix-backup-mx")
POSTFIX = "/usr/sbin/postfix"
#: The example values of the shipped files.
EXAMPLE_HOP = "[aimx.example.com]:25"
EXAMPLE_DOMAIN = "aimx.example.com"
MAPS = ("aimx_transport", "aimx_tls_policy")


def unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    if not os.access(POSTFIX, os.X_OK):
        return "Postfix is not installed (.ci/run installs Debian's postfix package)"
    if os.geteuid() != 0:
        return "needs root: Postfix's master runs as root and drops to the postfix user"
    return None


# The daemons of a relay-only instance; chroot off ("n"), as nothing is copied in.
_MASTER = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PrivatePostfix:
    """One Postfix instance: L{write}, then L{start}; L{stop} and L{remove} at the end.

    @ivar etc: its config directory (C{postfix -c etc}).
    @ivar log: its log file (C{maillog_file}).
    """

    def __init__(self, *, listen_port: int, domain: str, next_hop: str,
                 bind_address: str = "127.0.0.1"):
        """
        @param listen_port: the loopback port its smtpd listens on.
        @param domain: aimx's domain, for C{aimx.example.com}.
        @param next_hop: aimx's C{[host]:port}, for C{[mx.aimx.example.com]:25}.
        @param bind_address: the loopback address it relays from (the peer aimx sees).
        """
        self.root = tempfile.mkdtemp(prefix="aimx-pfx-")  # short: socket paths
        os.chmod(self.root, 0o755)
        self.etc = os.path.join(self.root, "etc")
        self.log = os.path.join(self.root, "maillog")
        self.listen_port = listen_port
        self.domain = domain
        self.next_hop = next_hop
        self.bind_address = bind_address

    def _shipped(self, name: str, *needles: str) -> str:
        """A contrib file with the example values replaced.

        @param needles: the example values it must hold (else the test is not
            testing what it was written for).
        """
        with open(os.path.join(CONTRIB, name)) as f:
            text = f.read()
        missing = [needle for needle in needles if needle not in text]
        if missing:
            raise AssertionError(f"contrib/postfix-backup-mx/{name} lacks {missing}")
        text = text.replace(EXAMPLE_HOP, self.next_hop).replace(EXAMPLE_DOMAIN, self.domain)
        return text.replace("/etc/postfix/", self.etc + "/")

    def write(self) -> None:
        """Write main.cf (this instance's settings, then the shipped fragment),
        master.cf and the shipped maps."""
        data = os.path.join(self.root, "data")
        for directory in (self.etc, os.path.join(self.root, "spool"), data):
            os.mkdir(directory)
            os.chmod(directory, 0o755)  # not the umask: the daemon sets 077 when it starts
        shutil.chown(data, "postfix")
        instance = f"""\
compatibility_level = 3.7
config_directory = {self.etc}
queue_directory = {self.root}/spool
data_directory = {data}
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
myhostname = backup.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
mydestination =
local_transport = error:local delivery is off
alias_maps =
alias_database =
# Loopback only: no DNS (the host's resolver is not the fixture).
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_bind_address = {self.bind_address}
smtp_tls_loglevel = 1
"""
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(instance + "\n" + self._shipped(
                "main.cf.fragment", EXAMPLE_DOMAIN,
                *(f"texthash:/etc/postfix/{name}" for name in MAPS)))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(_MASTER.format(listen=f"127.0.0.1:{self.listen_port}"))
        needles = {"aimx_transport": (EXAMPLE_DOMAIN, EXAMPLE_HOP),
                   "aimx_tls_policy": (EXAMPLE_HOP,)}
        for name in MAPS:
            with open(os.path.join(self.etc, name), "w") as f:
                f.write(self._shipped(name, *needles[name]))
        for name in os.listdir(self.etc):
            os.chmod(os.path.join(self.etc, name), 0o644)

    def set_tls_policy(self, policy: str) -> None:
        """Give the one entry of aimx_tls_policy another policy (C{fingerprint
        match=...}), as docs/backup-mx.md tells an operator to; L{reload} after."""
        path = os.path.join(self.etc, "aimx_tls_policy")
        with open(path) as f:
            lines = f.read().splitlines()
        [entry] = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
        lines[entry] = f"{lines[entry].split()[0]}    {policy}"
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self, program: str, *args: str) -> subprocess.CompletedProcess:
        """Run a Postfix command on this instance (blocking); raise with its log
        when it fails."""
        done = subprocess.run([os.path.join("/usr/sbin", program), "-c", self.etc, *args],
                              capture_output=True, text=True, timeout=60, umask=0o022)
        if done.returncode != 0:
            raise AssertionError(f"{program} {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr}\n{self.read_log()[-3000:]}")
        return done

    def start(self) -> None:
        self.command("postfix", "start")

    def stop(self) -> None:
        self.command("postfix", "stop")

    def reload(self) -> None:
        """C{postfix reload}: texthash maps are read again."""
        self.command("postfix", "reload")

    def flush(self) -> None:
        """C{postqueue -f}: the queue run (every deferred message is tried now)."""
        self.command("postqueue", "-f")

    def queue(self) -> list[dict]:
        """The queued messages, one C{postqueue -j} object each."""
        lines = self.command("postqueue", "-j").stdout.splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def read_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
