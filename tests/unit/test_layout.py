"""The layout's promises: which modules import which, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pyrowire"


def _imports(module: str) -> set[str]:
    """Every pyrowire name ``module`` imports, at the top or inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyrowire"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pyrowire"))
    return found


@pytest.mark.parametrize("module", ["webhook", "worker", "store", "outbound", "recovery", "ops", "web",
                                    "console/access", "console/data", "console/pages", "console/resource",
                                    "console/phone"])
def test_the_daemons_parts_do_not_reach_back_to_the_app_or_the_service(module: str) -> None:
    """Dependencies run one way: service -> app, webhook, worker, store; never back."""
    imported = _imports(module)
    assert not {"pyrowire.app", "pyrowire.service", "pyrowire.tap"} & imported


@pytest.mark.parametrize("module", ["store", "scripts", "keys", "envelope", "webhook", "worker", "outbound",
                                    "console/data", "console/resource"])
def test_only_the_redis_store_imports_a_redis_client(module: str) -> None:
    """txredisapi (and fakeredis) stay behind the Store: its protocol and its users import neither."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert not {"txredisapi", "fakeredis", "redis"} & names
