"""pyrowire's version, read by setup.py without importing the package.

0.9.0, above the 2014 project's last release on the package index (0.8.1): this is its
successor, and a requirement such as ``pyrowire>=0.9`` can never be met by the 2014
code. A final release rather than a pre-release (1.0.0.dev0), because pip passes over a
pre-release whenever a final version also matches, and would then pick 0.8.1. Not yet
1.0: the contract's later sections (conversations, delivery, console, scale-out) are
still to come.
"""

__version__ = "0.9.0"
