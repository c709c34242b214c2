"""``twistd pyrowire``: parse the options and assemble the service, nothing else.

Every wrong value ends start-up with one line on stderr and exit status 1,
never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.python import usage

from pyrowire import logs
from pyrowire.app import App
from pyrowire.errors import ConfigurationError
from pyrowire.service import Fatal, build_service, exit_on_fatal
from pyrowire.version import __version__

#: twistd's --pidfile, recorded by Options (removed when start-up fails after twistd wrote it)
twistd_pidfile: str | None = None


class Options(usage.Options):
    """The options of ``twistd pyrowire`` (each also read from the environment, see SPEC §3)."""

    synopsis = "[options]"
    longdesc = (f"pyrowire {__version__}: run a pyrowire application, the Twilio webhook, the workers, or both. "
                "Give each option its whole name: twistd also takes a prefix of one (--rol for --role).")

    optParameters: ClassVar[list[list[str | None]]] = [
        ["app", "a", None, "the application, MODULE[:ATTR] (env PYROWIRE_APP)"],
        ["role", "r", None, "all, web or worker (env RUN; default all)"],
        ["listen", "l", None, "a Twisted server endpoint description for the webhook (env PORT)"],
        ["redis", None, None, "redis://[:password@]host:port/db, rediss://…, unix:///path, "
         "redis+sentinel://[:password@]host:port[,host:port…]/service[/db] or embedded (env REDIS_URL)"],
        ["concurrency", "c", None, "concurrent handlers per topic in this process (default 16)"],
        ["profile", "p", None, "which entry of PROFILES to use (env ENV; default dev)"],
        ["grace", None, None, "seconds SIGTERM waits for in-flight handlers (default 25)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["topics"] = []

    def opt_version(self) -> None:
        """print pyrowire's version and Twisted's, and exit"""
        from twisted import __version__ as twisted_version

        sys.stdout.write(f"pyrowire {__version__} (Twisted {twisted_version})\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        global twistd_pidfile
        parent = getattr(self, "parent", None)
        if parent is not None:
            twistd_pidfile = parent.get("pidfile") or None
        if parent is not None and not parent.get("logger"):
            # pyrowire's own observer (level and format from the profile), unless --logger was given
            logs.twistd_target = (parent.get("logfile"), bool(parent.get("nodaemon")))
            parent["logger"] = "pyrowire.logs.twistd_default"  # twistd imports it by name

    def opt_topic(self, name: str) -> None:
        """a topic this worker serves (repeatable; env TOPIC; default every configured topic)"""
        self["topics"].append(name)


def load_app(spec: str, option: str = "--app") -> App:
    """Import ``MODULE[:ATTR]`` with the working directory first on sys.path, as gunicorn does."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigurationError(option, f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise ConfigurationError(option, f"{module_name!r} has no pyrowire App called {attr!r}")
        return app
    app = getattr(module, "app", None)
    if isinstance(app, App):
        return app
    import pyrowire

    if pyrowire.default_app.handlers or pyrowire.default_app._source is not None:
        return pyrowire.default_app
    raise ConfigurationError(option, f"{module_name!r} defines no pyrowire App (expected an attribute 'app')")


def service_from(options: Mapping[str, Any], environ: Mapping[str, str], reactor: Any = None,
                 app_option: str = "--app") -> IService:
    """The service for these options, or one line on stderr and exit status 1.

    The listen address is bound here, before twistd writes its pid file and before anything
    starts, so a taken port or a bad description leaves nothing behind. ``app_option`` is how
    the application is named where it is missing (``PYROWIRE_APP`` for pyrowire.tac).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        spec = options.get("app") or environ.get("PYROWIRE_APP")
        if not spec:
            example = "PYROWIRE_APP=app" if app_option == "PYROWIRE_APP" else f"{app_option} app"
            raise ConfigurationError(app_option, f"name the application module, e.g. {example}")
        app = load_app(str(spec), "--app" if options.get("app") else "PYROWIRE_APP")
        service = build_service(app, options, environ, reactor, _without_pidfile(exit_on_fatal(reactor), reactor),
                                handle_signals=True)
        logs.configure(logs.config_for(service.config.profile, environ))
        service.bind()
        return service
    except ConfigurationError as e:
        sys.stderr.write(f"pyrowire: error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def _without_pidfile(fatal: Fatal, reactor: Any) -> Fatal:
    """``fatal``, first arranging that twistd's pid file goes with the process (it exits without removing it)."""

    def on_fatal(error: ConfigurationError) -> None:
        if twistd_pidfile:
            # registered before fatal's own "after shutdown" trigger, which exits: triggers run in order
            reactor.addSystemEventTrigger("after", "shutdown", _remove_pidfile, twistd_pidfile)
        fatal(error)

    return on_fatal


def _remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            ours = f.read().strip() == str(os.getpid())
        if ours:
            os.unlink(path)
    except OSError:
        pass


def makeService(options: Options) -> IService:
    return service_from(options, os.environ)
