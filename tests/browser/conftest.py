"""Fixtures of the browser tests: Debian's chromium driven by Playwright, and one daemon per module.

Playwright never downloads a browser here: it launches the ``chromium`` executable of the
system (Debian's package; ``.ci/run`` installs it), named by ``PYROWIRE_CHROMIUM`` or found
on PATH. A screenshot of every page a test leaves open is saved under
``$PYROWIRE_TEST_ARTIFACTS`` (default ``.artifacts/``) in ``console/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.process.harness import REPO, Deployment
from tests.redis_server import RedisServer

ARTIFACTS = Path(os.environ.get("PYROWIRE_TEST_ARTIFACTS") or REPO / ".artifacts") / "console"
# what a root Chromium in a closed network needs: no sandbox (root), no GPU, nothing fetched in the background
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium() -> str:
    found = os.environ.get("PYROWIRE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium (.ci/run does)",
                    pytrace=False)
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """A daemon (``--role all`` on the tests' Redis, debug profile) and its console's base URL."""

    def __init__(self, deployment: Deployment, base: str) -> None:
        self.deployment = deployment
        self.base = base

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, redis_server_session: RedisServer) -> Iterator[Console]:
    deployment = Deployment(tmp_path_factory.mktemp("console"), redis_server_session.url)
    deployment.expect_errors("fragile is broken", "handler for fragile failed")
    try:
        env = deployment.env(PYROWIRE_HEARTBEAT_TTL="3")
        process, base = deployment.twistd("--app", "console_app", "--role", "all", env=env)
        process.wait_healthy(base)
        yield Console(deployment, base)
    finally:
        deployment.close()
    errors = deployment.unexpected_errors()
    if errors:
        pytest.fail("the daemon logged errors during the browser tests:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context's page; a script error on it fails the test, and its last state is saved."""
    context = browser.new_context(viewport={"width": 1200, "height": 820})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console_message(message: Any) -> None:
        if message.type == "error" and "status of 40" not in message.text:  # refusals the test asks for
            problems.append(f"console error: {message.text}")

    opened.on("console", console_message)
    try:
        yield opened
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            opened.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert not problems, problems
