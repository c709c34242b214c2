"""The service tree of one pyrowire process, started in dependency order and stopped in reverse.

Redis (embedded or not) comes first, then the worker loops, then the web
listener; stopping goes web listener, workers (drain, put back), Twilio
client, Redis, each awaited before the next, so SIGTERM drains and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.resource import IResource

from pyrowire import listening, redis_watch
from pyrowire.app import App
from pyrowire.embedded import EmbeddedRedis
from pyrowire.errors import ConfigurationError
from pyrowire.metrics import Metrics
from pyrowire.outbound import Sender
from pyrowire.recovery import Supervisor
from pyrowire.redis_store import RedisStore
from pyrowire.runconfig import ProcessConfig, RedisAddress, resolve
from pyrowire.runtime import Runtime
from pyrowire.twilio import TwilioClient
from pyrowire.worker import TopicWorker

REDIS_WAIT_SECONDS = 6.0

Fatal = Callable[[ConfigurationError], None]


def _default_reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


class PyrowireService(MultiService):
    """Everything one pyrowire process runs, for one App and one ProcessConfig."""

    log = Logger()

    def __init__(self, app: App, config: ProcessConfig, reactor: Any, on_fatal: Fatal | None = None,
                 handle_signals: bool = False) -> None:
        super().__init__()
        self.handle_signals = handle_signals
        self._signalled = False
        self.app = app
        self.config = config
        self.reactor = reactor
        self.on_fatal = on_fatal
        self.store = RedisStore(config.redis, prefix=config.profile.key_prefix)
        self.metrics = Metrics(config.settings.topics)
        self.embedded: EmbeddedRedis | None = None
        self.twilio: TwilioClient | None = None
        self.workers: list[TopicWorker] = []
        self.supervisor: Supervisor | None = None
        self.port: Any = None
        self._binding: Deferred[listening.Listener] | None = None
        self.listener: listening.Listener | None = None
        self.watch: redis_watch.RedisWatch | None = None
        self.runtime: Runtime | None = None
        self.ready: Deferred[PyrowireService] = Deferred()
        self._starting: Deferred[None] | None = None
        self._previous_runtime: Runtime | None = None

    def startService(self) -> None:
        Service.startService(self)
        if self.handle_signals:
            # after the reactor installed its own handlers, which ours then wrap
            self.reactor.callWhenRunning(self._install_signal_handlers)
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._start_failed)

    def _install_signal_handlers(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            if callable(previous):
                signal.signal(number, partial(self._on_signal, previous))

    def _on_signal(self, previous: Callable[[int, Any], Any], number: int, frame: Any) -> None:
        """The first SIGTERM/SIGINT drains (via the reactor's handler); a second one exits at once."""
        if self._signalled:
            stream = sys.__stderr__ or sys.stderr
            stream.write("pyrowire: second signal, exiting now; messages in flight are left to recovery\n")
            stream.flush()
            os._exit(1)
        self._signalled = True
        previous(number, frame)

    def _start_failed(self, failure: Any) -> None:
        if failure.check(defer.CancelledError):
            return
        error = failure.value
        if not isinstance(error, ConfigurationError):
            self.log.failure("pyrowire could not start", failure)
            error = ConfigurationError("start-up", f"{type(error).__name__}: {error}")
        if not self.ready.called:
            self.ready.errback(error)
            self.ready.addErrback(lambda _: None)
        if self.on_fatal is not None:
            self.on_fatal(error)
        else:
            self.log.error("pyrowire could not start: {error}", error=str(error))

    def bind(self) -> None:
        """Bind the listen address now, before anything starts: a description that does not parse or an
        address that is taken raises its ConfigurationError here (twistd's makeService, pyrowire.run())."""
        if self.config.listen and self._binding is None:
            self._binding = listening.start_binding(self.reactor, self.config.listen, self._site())

    async def _start(self) -> None:
        config = self.config
        if config.listen:
            self.bind()
            assert self._binding is not None
            self.listener = await self._binding  # accepting nothing until _listen opens it
            self.port = self.listener.port
        address = config.redis
        if address.kind == "embedded":
            self.embedded = EmbeddedRedis(self.reactor, os.path.join(os.getcwd(), ".pyrowire", "redis"))
            self.embedded.startService()
            path = await self.embedded.ready
            address = RedisAddress("unix", path=path)
        self.store.start(address)
        await self._wait_for_redis()
        self.watch = redis_watch.watch(self.store, self.reactor, config.role, config.topics, bool(config.listen))
        self.twilio = TwilioClient(self.reactor)
        sender = Sender(self.twilio, self.store, self.reactor, self.metrics)
        sender.watches_status = self.app.watches_status
        self.runtime = Runtime(self.store, sender, self.reactor, metrics=self.metrics)
        self.app.use_settings(config.settings)
        self._previous_runtime = self.app.runtime  # e.g. an app.resource()'s, given back on stop
        self.app.runtime = self.runtime
        if config.role in ("all", "worker"):
            await self._start_workers(self.runtime)
        if config.listen:
            await self._listen()  # a worker listens only when given --listen, for /health and /metrics
        self.ready.callback(self)

    async def _wait_for_redis(self) -> None:
        deadline = self.reactor.seconds() + REDIS_WAIT_SECONDS
        while not self.store.connected:
            if self.reactor.seconds() >= deadline:
                raise ConfigurationError("--redis", f"cannot reach Redis at {self.store.address.display()}")
            await deferLater(self.reactor, 0.05)
        await self.store.ping()

    async def _start_workers(self, runtime: Runtime) -> None:
        config = self.config
        self.workers = [
            TopicWorker(runtime, config.settings.topics[name], self.app.handlers[name], config.concurrency,
                        config.grace, self.app.opt_out_hooks.get(name), self.app.status_hooks.get(name))
            for name in config.topics
        ]
        self.supervisor = Supervisor(runtime, config.topics, self.workers, config.heartbeat_ttl)
        await self.supervisor.first_beat()
        self.supervisor.startService()
        for worker in self.workers:
            worker.startService()
        self.log.info("worker {worker} serving {topics} with concurrency {n}", worker=runtime.worker_id,
                      topics=", ".join(config.topics), n=config.concurrency)

    def _site(self) -> Any:
        # imported here: a worker that does not listen never loads Klein and werkzeug (~3.5 MB)
        from pyrowire.site import WebSite
        from pyrowire.web import root

        serves = self.app if self.config.role != "worker" else None
        workers = self.worker_health if self.config.role != "web" else None
        from pyrowire.console import Access

        console = Access(self.config.console_password, self.config.profile.debug)
        return WebSite(root(serves, self.store, self.reactor, self.metrics, self.config.profile.public_url, workers,
                            console),
                       access_log=self.config.profile.debug, reactor=self.reactor, metrics=self.metrics)

    def worker_health(self) -> dict[str, dict[str, int]]:
        """Per served topic: loops running of how many, loops started again after an unexpected end, busy."""
        return {w.topic.name: {"loops": w.loops, "concurrency": w.concurrency, "restarts": w.restarts,
                               "busy": w.busy} for w in self.workers}

    async def _listen(self) -> None:
        assert self.listener is not None
        self.listener.open()
        host = self.listener.port.getHost()
        self.log.info("webhook listening on {host}:{port}", host=getattr(host, "host", host),
                      port=getattr(host, "port", ""))

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        if self._binding is not None and not self._binding.called:
            self._binding.cancel()
        if self.listener is not None:
            await self.listener.close()
            self.listener = self.port = None
        if self.workers:
            await defer.DeferredList([w.stopService() for w in self.workers if w.running], consumeErrors=True)
        if self.supervisor is not None and self.supervisor.running:
            await self.supervisor.stopService()
        if self.twilio is not None:
            await self.twilio.close()
        if self.app.runtime is self.runtime:
            self.app.runtime = self._previous_runtime
        if self.watch is not None:
            self.watch.stop()
        await self.store.stop()
        if self.embedded is not None and self.embedded.running:
            await self.embedded.stopService()
        if getattr(self.reactor, "_exitSignal", None) in (signal.SIGTERM, signal.SIGINT):
            # drained cleanly: exit 0 rather than re-raise the signal as stock twistd does (143, or 130 for Ctrl-C)
            self.reactor._exitSignal = None
        self.log.info("pyrowire stopped")


def build_service(app: App, options: Mapping[str, Any], environ: Mapping[str, str], reactor: Any = None,
                  on_fatal: Fatal | None = None, handle_signals: bool = False) -> PyrowireService:
    """Resolve the options against the environment and settings, and assemble the service."""
    config = resolve(options, environ, app.settings, lambda topic: topic in app.handlers)
    for name in config.settings.topics:
        app.checks(config.settings.topics[name])  # an unknown validator name fails here, at start-up
    return PyrowireService(app, config, _default_reactor(reactor), on_fatal, handle_signals)


def build_resource(app: App, options: Mapping[str, Any], environ: Mapping[str, str],
                   reactor: Any = None) -> IResource:
    """The webhook (with /health and /metrics) on its own Redis connections, for mounting in another site."""
    reactor = _default_reactor(reactor)
    config = resolve({**options, "role": "web", "listen": "tcp:0"}, environ, app.settings)
    if config.redis.kind == "embedded":
        raise ConfigurationError("redis", "app.resource() needs a Redis URL; use app.service() for embedded")
    store = RedisStore(config.redis, prefix=config.profile.key_prefix)
    store.start()
    # a resource has no stop of its own: its connections close with the reactor
    reactor.addSystemEventTrigger("before", "shutdown", store.stop)
    app.use_settings(config.settings)
    metrics = Metrics(config.settings.topics)
    if app.runtime is None:
        app.runtime = Runtime(store, Sender(TwilioClient(reactor), store, reactor, metrics), reactor, metrics=metrics)
    from pyrowire.console import Access
    from pyrowire.web import root

    return root(app, store, reactor, metrics, config.profile.public_url,
                console=Access(config.console_password, config.profile.debug))


def exit_on_fatal(reactor: Any) -> Fatal:
    """For twistd and ``app.run()``: print one line, stop the reactor, exit with status 1."""

    def fatal(error: ConfigurationError) -> None:
        stream = sys.__stderr__ or sys.stderr
        stream.write(f"pyrowire: error: {error}\n")
        stream.flush()
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    return fatal


def run_foreground(app: App, environ: Mapping[str, str]) -> None:
    """Run ``app`` until SIGTERM or SIGINT, logging to stdout (``pyrowire.run()``)."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from pyrowire import logs

    try:
        service = build_service(app, {}, environ, reactor, exit_on_fatal(reactor), handle_signals=True)
        config = logs.config_for(service.config.profile, environ)
        service.bind()
    except ConfigurationError as e:
        sys.stderr.write(f"pyrowire: error: {e}\n")
        raise SystemExit(1) from None
    globalLogBeginner.beginLoggingTo([logs.Observer(sys.stdout, config)])
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()  # type: ignore[attr-defined]
