"""The daemon's composition root (L2): options, start-up checks and the service tree.

C{twistd -n aimx} and C{aimx serve} both call L{makeService}.  Start-up follows
docs/cli.md, "aimx serve": a fatal problem raises C{SystemExit} with one clear line.
"""

import os
import signal
import sys

from twisted.application import service
from twisted.internet import defer, ssl, threads
from twisted.python import threadpool, usage

from aimx.auditlog import AuditLog
from aimx.auth.resolver import DnsNoRecord, DnsTempError, Resolver
from aimx.auth.verify import BUDGET
from aimx.control.amp import ControlFactory, ControlSocket
from aimx.control.approvals import Expiry
from aimx.control.wire import SOCKET_NAME
from aimx.control.ops import Control
from aimx.core import audit
from aimx.ops import bind, dkimcheck
from aimx.errors import ConfigError
from aimx.hooks import HookRunner
from aimx.host import addresses
from aimx.webhooks import Webhooks
from aimx.indexer import Indexer
from aimx.listening import ListenError, endpoint, listen
from aimx import logs
from aimx.logs import Logger
from aimx.outbox import Outbox, Signer
from aimx.smtp.outbound import MxTransport
from aimx.smtp.inbound import Inbound
from aimx.smtp.preppool import PreparePool, default_size
from aimx.smtp.server import AimxSMTPFactory, SmtpLimits
from aimx.smtp.tls import server_options
from aimx.store import configfile, datadir, keys
from aimx.store.mailboxdirs import mailbox_names
from aimx.store.mailstore import MailStore

log = Logger(namespace="aimx.daemon")
config_log = Logger(namespace="aimx.config")
dkim_log = Logger(namespace="aimx.dkim")
smtp_log = Logger(namespace="aimx.smtp")

DRAIN_SECONDS = 30
PID_NAME = bind.PID_NAME
#: Threads for DNS and authentication, apart from the reactor's pool (storage,
#: control commands): slow name servers can only slow other lookups.
DNS_THREADS = 16


class Options(usage.Options):
    """Options shared by C{twistd aimx} and C{aimx serve} (flag > env > default).

    @ivar binds: the parsed C{--bind} values, in order (L{aimx.ops.bind.Bind}).
    """

    optParameters = [
        ["config-dir", None, None, "config directory [AIMX_CONFIG_DIR, /etc/aimx]"],
        ["data-dir", None, None, "data directory [AIMX_DATA_DIR, config, /var/lib/aimx]"],
        ["runtime-dir", None, None, "runtime directory [AIMX_RUNTIME_DIR, /run/aimx]"],
        ["tls-cert", None, None, f"STARTTLS certificate [{keys.DEFAULT_TLS_CERT}]"],
        ["tls-key", None, None, f"STARTTLS private key [{keys.DEFAULT_TLS_KEY}]"],
    ]

    def __init__(self):
        super().__init__()
        self["bind"] = []

    def opt_bind(self, value):
        self["bind"].append(value)

    # usage.Options prints a docstring as it is: one line, wrapped by it.
    opt_bind.__doc__ = (
        "SMTP listen address, repeatable: HOST:PORT ([::1]:25 for IPv6) or an endpoint: "
        "tcp:25:interface=HOST, tcp6:25, systemd:domain=INET6:index=0 [0.0.0.0:25]"
    )

    def postOptions(self):
        env = os.environ
        self["config-dir"] = self["config-dir"] or env.get("AIMX_CONFIG_DIR", "/etc/aimx")
        self["data-dir"] = self["data-dir"] or env.get("AIMX_DATA_DIR")
        self["runtime-dir"] = self["runtime-dir"] or env.get(
            "AIMX_RUNTIME_DIR", "/run/aimx"
        )
        try:
            self.binds = bind.parse_all(self["bind"])
        except bind.BindError as e:
            raise usage.UsageError(str(e)) from None
        self["bind"] = [b.text for b in self.binds]
        if self.parent is not None:  # under twistd
            logs.use_for_twistd(self.parent)


class LiveConfig:
    """The current configuration snapshot; calling it returns the snapshot.

    @ivar lock: the config-write lock (control-socket mutations, reload).
    """

    def __init__(self, config):
        self.current = config
        self.lock = defer.DeferredLock()

    def __call__(self):
        return self.current


class SmtpListener(service.Service):
    """Listens for SMTP on every C{--bind} endpoint and drains open sessions on stop.

    @ivar ports: the listening ports, in C{--bind} order, once started.
    """

    def __init__(self, reactor, factory: AimxSMTPFactory, binds: tuple[bind.Bind, ...]):
        self.reactor = reactor
        self.factory = factory
        self.binds = binds
        self.ports: list = []
        self._unbound: defer.Deferred | None = None  # after a failed start

    def startService(self):
        """Bind every endpoint in order; the first failure is fatal and unbinds the rest.

        @raise ConfigError: C{Failed to bind to <--bind value>: <reason>}.
        """
        for value in self.binds:
            try:
                self.ports.append(listen(endpoint(self.reactor, value), self.factory))
            except ListenError as e:
                ports, self.ports = self.ports, []
                self._unbound = defer.gatherResults(
                    [defer.maybeDeferred(port.stopListening) for port in ports]
                )
                raise ConfigError(f"Failed to bind to {value.text}: {e}") from None
        super().startService()
        tls = "enabled" if self.factory.tls_options else "disabled"
        for port in self.ports:
            address = port.getHost()
            smtp_log.info(
                bind.LISTENING,
                address=bind.address_text(address.host, address.port),
                tls=tls,
            )

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._unbound is not None:
            yield self._unbound
        ports, self.ports = self.ports, []
        if ports:
            smtp_log.info("listener shutting down", connections=len(self.factory.sessions))
            yield defer.gatherResults(
                [defer.maybeDeferred(port.stopListening) for port in ports]
            )
            yield self.factory.drain(DRAIN_SECONDS)
            smtp_log.info("listener shut down")


class PidFile(service.Service):
    """Writes C{<runtime_dir>/aimx.pid} while running: the daemon's readiness signal.

    L{build} adds it after every listener, so the file appears only once each
    C{--bind} endpoint and the control socket are bound and their addresses logged.
    """

    def __init__(self, path: str):
        self.path = path

    def startService(self):
        super().startService()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warn("pid file not written", path=self.path, error=e)

    def stopService(self):
        super().stopService()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Daemon(service.MultiService):
    """The aimx service tree; reloads the configuration on SIGHUP.

    @ivar pools: thread pools of its own, started with it and stopped once every
        child service has stopped (a draining session may still need them).
    """

    def __init__(self, reactor, options: Options, live: LiveConfig):
        super().__init__()
        self.reactor = reactor
        self.options = options
        self.live = live
        self.pools: list[threadpool.ThreadPool] = []
        self.audit: AuditLog | None = None
        self.webhooks: Webhooks | None = None
        self.workers: PreparePool | None = None

    def startService(self):
        # The handler comes first: a SIGHUP right after the pid file appears (a
        # service manager's reload) must reload, not kill the daemon.
        if hasattr(signal, "SIGHUP"):
            signal.signal(
                signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload)
            )
        for pool in self.pools:
            pool.start()
        super().startService()

    def stopService(self):
        stopped = defer.maybeDeferred(super().stopService)

        def stop_pools(result):
            for pool in self.pools:
                if pool.started and not pool.joined:
                    pool.stop()
            return result

        return stopped.addBoth(stop_pools)

    def reload(self) -> defer.Deferred:
        """Re-read config.toml; keep the old snapshot if the new one is invalid.
        Then read the host's addresses again (the webhooks' own addresses).

        Runs under the config lock so it never interleaves with a control mutation.
        """
        d = self.live.lock.run(self._reload)
        d.addErrback(lambda f: config_log.failure("config reload crashed", f))
        if self.webhooks is not None:
            d.addCallback(lambda _: self.webhooks.read_addresses())
        return d

    def _reload(self):
        path = configfile.config_path(self.options["config-dir"])
        try:
            config, warnings = configfile.load(
                self.options["config-dir"], data_dir_override=self.options["data-dir"]
            )
        except ConfigError as e:
            config_log.error("config reload failed, keeping the previous config",
                             path=path, error=e)
            return
        for warning in warnings:
            config_log.warn("config warning", problem=warning)
        self.live.current = config
        hooks = sum(len(mb.hooks) for mb in config.mailboxes)
        config_log.info("config reloaded", path=path, mailboxes=len(config.mailboxes),
                        hooks=hooks)
        if self.audit is not None:
            self.audit.record(audit.reloaded(len(config.mailboxes), hooks))


def dkim_dns_check(config, config_dir: str, resolver):
    """Compare the published DKIM key with the local one (blocking; never raises).

    @return: C{(level, text)} to log, or C{None} when they match.
    """
    fqdn = f"{config.dkim_selector}._domainkey.{config.domain}"
    try:
        local = keys.local_public_key_b64(config_dir)
    except (OSError, ValueError) as e:
        return dkimcheck.report(fqdn, config.domain, "", None, f"local key error: {e}")
    try:
        txts = resolver.txt(fqdn)
    except DnsNoRecord:
        return dkimcheck.report(fqdn, config.domain, local, None, f"no TXT record at {fqdn}")
    except DnsTempError as e:
        return dkimcheck.report(fqdn, config.domain, local, None, str(e))
    return dkimcheck.report(fqdn, config.domain, local, txts)


class DkimDnsCheck(service.Service):
    """Runs the DKIM DNS sanity check in a thread once the daemon has started."""

    def __init__(self, run_in_thread, check):
        self.run_in_thread = run_in_thread
        self.check = check

    def startService(self):
        super().startService()
        self.done = self.run_in_thread(self.check)
        self.done.addCallback(self._report)
        self.done.addErrback(lambda f: dkim_log.failure("DKIM DNS check crashed", f))

    def _report(self, result):
        if result is not None:
            level, text = result
            (dkim_log.error if level == "error" else dkim_log.warn)(
                "DKIM DNS check", problem=text)


def _tls(options: Options):
    cert = options["tls-cert"] or keys.DEFAULT_TLS_CERT
    key = options["tls-key"] or keys.DEFAULT_TLS_KEY
    explicit = options["tls-cert"] or options["tls-key"]
    if not explicit and not (os.access(cert, os.R_OK) and os.access(key, os.R_OK)):
        log.warn("TLS certificate or key not found, running without STARTTLS",
                 cert=cert, key=key)
        return None
    return server_options(*keys.load_tls_pair(cert, key))


def _out_port(environ) -> int:
    """C{AIMX_SMTP_OUT_PORT} (loopback tests), else 25."""
    raw = environ.get("AIMX_SMTP_OUT_PORT", "25")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"AIMX_SMTP_OUT_PORT must be a port number (1-65535), not {raw!r}")
    return int(raw)


def _trust_root(environ):
    """The webhooks' TLS trust root: C{SSL_CERT_FILE}'s certificates when it is set
    (as OpenSSL reads it), else the platform's."""
    path = environ.get("SSL_CERT_FILE")
    if not path:
        return None
    with open(path, "rb") as f:
        return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(f.read())])


def build(
    options: Options, reactor=None, limits: SmtpLimits = SmtpLimits(), environ=os.environ,
    resolver: Resolver | None = None, auth_budget: float = BUDGET, workers: int = 0,
) -> Daemon:
    """Run the start-up checks and build the service tree.

    @param limits: SMTP session limits (tests lower them).
    @param environ: where C{AIMX_NAMESERVERS} and friends are read; hooks get its
        C{PATH} and C{HOME}.
    @param resolver: the DNS resolver; by default built from C{environ}.
    @param auth_budget: seconds one inbound message's authentication may take.
    @param workers: worker processes parsing and authenticating inbound mail
        (L{aimx.smtp.preppool}); 0: the daemon's threads do it.

    @raise ConfigError: a fatal start-up problem (the message says which).
    """
    if reactor is None:
        from twisted.internet import reactor
    config, warnings = configfile.load(
        options["config-dir"], data_dir_override=options["data-dir"]
    )
    for warning in warnings:
        config_log.warn("config warning", problem=warning)
    os.umask(0o077)
    for warning in datadir.prepare(config.data_dir):
        log.warn("data directory warning", problem=warning)
    tls_options = _tls(options)
    signer = Signer(keys.load_dkim_private_key(options["config-dir"]), config.dkim_selector)
    out_port = _out_port(environ)

    live = LiveConfig(config)
    daemon = Daemon(reactor, options, live)
    pool = reactor.getThreadPool()
    if resolver is None:
        resolver = Resolver.from_env(environ)
    dns_pool = threadpool.ThreadPool(0, DNS_THREADS, "aimx-dns")
    daemon.pools.append(dns_pool)

    def run_in_thread(f, *args):
        return threads.deferToThreadPool(reactor, pool, f, *args)

    def run_dns(f, *args):
        return threads.deferToThreadPool(reactor, dns_pool, f, *args)

    inbound = Inbound(
        config=live,
        store=MailStore(config.data_dir),
        resolver=resolver,
        run_in_thread=run_in_thread,
        run_dns=run_dns,
        budget=auth_budget,
    )
    if workers:
        daemon.workers = PreparePool(reactor, size=workers, threads=DNS_THREADS,
                                     environ=environ, fallback=inbound.prepare_here)
        inbound.prepare = daemon.workers.prepare
    factory = AimxSMTPFactory(
        config=live,
        deliver=inbound.deliver,
        clock=reactor,
        limits=limits,
        tls_options=tls_options,
    )
    daemon.inbound = inbound
    daemon.index = Indexer(
        reactor, config.data_dir, run_in_thread,
        names=lambda: mailbox_names(live.current, config.data_dir),
    )
    inbound.listeners.append(daemon.index.on_received)
    # Started first, stopped last: the SMTP drain and control commands still use it.
    daemon.index.setServiceParent(daemon)
    # Stopped after every service that records (its stop writes what is queued).
    daemon.audit = AuditLog(config=live, clock=reactor, run_in_thread=run_in_thread)
    daemon.audit.setServiceParent(daemon)
    daemon.webhooks = Webhooks(
        reactor, config=lambda: live.current, config_dir=options["config-dir"],
        data_dir=config.data_dir, resolver=resolver, run_in_thread=run_in_thread,
        run_dns=run_dns, interface_addresses=addresses.interface_addresses,
        trust_root=_trust_root(environ),
    )
    daemon.webhooks.setServiceParent(daemon)
    if workers:
        # Stopped after the SMTP drain, whose messages it may be preparing.
        daemon.workers.setServiceParent(daemon)
    daemon.hooks = HookRunner(reactor, config=live, environ=environ,
                              audit=daemon.audit.record, webhooks=daemon.webhooks)
    inbound.listeners.append(daemon.hooks.on_received)
    daemon.smtp = SmtpListener(reactor, factory, options.binds)
    daemon.smtp.setServiceParent(daemon)
    drop_dir = environ.get("AIMX_TEST_MAIL_DROP") or None
    if drop_dir is not None:
        log.warn(
            "AIMX_TEST_MAIL_DROP is set: outbound mail is written to a directory and NOT "
            "delivered, for tests only; unset it on production hosts",
            path=drop_dir,
        )
    outbox = Outbox(
        store=inbound.store,
        transport=MxTransport(
            reactor=reactor, resolver=resolver, run_in_thread=run_dns,
            helo=config.domain, port=out_port, ipv6=config.enable_ipv6,
        ),
        hooks=daemon.hooks,
        run_in_thread=run_in_thread,
        signer=signer,
        local=inbound.deliver_each,
        drop_dir=drop_dir,
    )
    daemon.outbox = outbox
    control = Control(
        live=live,
        config_dir=options["config-dir"],
        data_dir=config.data_dir,
        mailbox_lock=inbound.lock,
        run_in_thread=run_in_thread,
        outbox=outbox,
        index=daemon.index,
        webhooks=daemon.webhooks,
        audit=daemon.audit,
    )
    # Mail to the approval address that is an approval reply (docs/guardrails.md).
    inbound.approval_replies = control.approvals.on_reply
    daemon.approvals = control.approvals
    daemon.webhooks.disable = control.hook_disable
    daemon.control = ControlSocket(
        reactor,
        os.path.join(options["runtime-dir"], SOCKET_NAME),
        ControlFactory(control, clock=reactor),
        grace=DRAIN_SECONDS,
    )
    daemon.control.setServiceParent(daemon)
    # Services start in the order they are added: the pid file says "ready", so it
    # comes after every listener (and the SIGHUP handler is installed before all).
    PidFile(os.path.join(options["runtime-dir"], PID_NAME)).setServiceParent(daemon)
    daemon.dkim_check = DkimDnsCheck(
        run_dns, lambda: dkim_dns_check(config, options["config-dir"], resolver)
    )
    daemon.dkim_check.setServiceParent(daemon)
    # Held messages past their expires_at move to rejected/ (at start, then hourly).
    Expiry(control.approvals, reactor).setServiceParent(daemon)
    return daemon


def default_workers() -> int:
    """The worker processes of C{twistd -n aimx} and C{aimx serve} on this machine."""
    return default_size(os.cpu_count())


def makeService(options: Options) -> Daemon:
    """twistd's entry point; a fatal start-up problem exits with its message."""
    try:
        return build(options, workers=default_workers())
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(1)
