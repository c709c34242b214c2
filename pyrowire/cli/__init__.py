"""The ``pyrowire`` console command: ``init`` (the scaffold), ``send``/``chat`` (a phone in the
terminal) and ``dead`` (dead letters). It is a client of a running daemon, never part of one."""

from pyrowire.cli.command import main

__all__ = ["main"]
