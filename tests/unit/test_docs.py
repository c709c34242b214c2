"""The documentation under docs/: the tutorial's code is real and runs, and its links resolve."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import pytest_twisted

DOCS = Path(__file__).resolve().parents[2] / "docs"
TUTORIAL = DOCS / "tutorial"
TUTORIAL_FILES = ("app.py", "settings.py", "test_app.py")

# a code block marked as one of the tutorial's files: <!-- tutorial-file: NAME --> then ```python
_MARKED_BLOCK = re.compile(r"<!-- tutorial-file: (\S+) -->\n```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_FENCE = re.compile(r"^\s*```.*?^\s*```\s*$", re.DOTALL | re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def marked_blocks(markdown: str) -> dict[str, str]:
    """The code blocks of ``markdown`` marked as tutorial files, by file name."""
    return {name: code for name, code in _MARKED_BLOCK.findall(markdown)}


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading of ``markdown`` outside code blocks."""
    text = _FENCE.sub("", markdown)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def links(markdown: str) -> list[str]:
    """Every link target of ``markdown`` outside code."""
    text = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    return _LINK.findall(text)


def test_tutorial_code_blocks_are_the_tutorial_files() -> None:
    """Each code block tutorial.md marks as a tutorial file is that file of docs/tutorial/, byte for byte."""
    blocks = marked_blocks((DOCS / "tutorial.md").read_text(encoding="utf-8"))
    assert sorted(blocks) == sorted(TUTORIAL_FILES)
    for name, code in blocks.items():
        assert code == (TUTORIAL / name).read_text(encoding="utf-8"), f"tutorial.md's {name} differs from the file"


@pytest.fixture
def tutorial_modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    """The tutorial's app and settings modules, imported fresh and forgotten afterwards."""
    names = ("app", "settings")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, str(TUTORIAL))
    try:
        import app  # type: ignore[import-not-found]
        import settings  # type: ignore[import-not-found]

        yield app, settings
    finally:
        sys.path.remove(str(TUTORIAL))
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest_twisted.ensureDeferred
async def test_tutorial_app_answers_with_a_joke(tutorial_modules: tuple[ModuleType, ModuleType]) -> None:
    """The tutorial's app, fed "tell me a joke" through AppTester, texts one of its jokes back to the sender."""
    testing = pytest.importorskip("pyrowire.testing")
    app, settings = tutorial_modules
    jokes = settings.TOPICS["joke"]["properties"]["jokes"]
    tester = testing.AppTester(app.app)
    try:
        result = await tester.feed("joke", body="tell me a joke", number="+15551234567")
    finally:
        await tester.close()
    assert result.accepted
    assert result.error is None
    assert [m["to"] for m in result.sent] == ["+15551234567"]
    assert result.sent[0]["body"] in jokes


def test_relative_links_between_docs_resolve() -> None:
    """Every relative link in docs/*.md names an existing file and, for a Markdown file, an existing heading."""
    pages = sorted(DOCS.glob("*.md"))
    assert pages
    broken = []
    for page in pages:
        for target in links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto: …
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
