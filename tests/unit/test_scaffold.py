"""What ``pyrowire init`` writes: files that compile, settings that load, and no overwriting by accident."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import pyrowire
from pyrowire.cli import scaffold
from pyrowire.settings import load_settings

SECRETS = {"TWILIO_ACCOUNT_SID": "AC" + "9" * 32, "TWILIO_AUTH_TOKEN": "secret-token-4242",
           "TWILIO_NUMBER": "+15550009999"}


def settings_namespace(directory: Path) -> dict[str, Any]:
    """The generated settings.py, executed."""
    namespace: dict[str, Any] = {"__name__": "settings"}
    exec(compile((directory / "settings.py").read_text(), "settings.py", "exec"), namespace)
    return namespace


def test_write_creates_the_directory_and_every_file(tmp_path: Path) -> None:
    """write() creates a missing directory and writes every file of the app, .gitignore included."""
    target = tmp_path / "a" / "b"
    assert scaffold.write(str(target)) == ["app.py", "settings.py", "Procfile", "requirements.txt", "test_app.py",
                                           ".gitignore"]
    for name, text in scaffold.files(scaffold.installed_source()).items():
        assert (target / name).read_text(encoding="utf-8") == text


@pytest.mark.parametrize("name", ["app.py", "settings.py", "test_app.py"])
def test_generated_python_compiles(tmp_path: Path, name: str) -> None:
    """Each generated Python file compiles."""
    scaffold.write(str(tmp_path))
    compile((tmp_path / name).read_text(), name, "exec")


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    """With any target file present, nothing at all is written and the error names the files present."""
    (tmp_path / "requirements.txt").write_text("flask\n")
    (tmp_path / "settings.py").write_text("X = 1\n")
    with pytest.raises(scaffold.WouldOverwrite) as e:
        scaffold.write(str(tmp_path))
    assert e.value.names == ["settings.py", "requirements.txt"]
    assert str(e.value) == f"settings.py, requirements.txt already in {tmp_path}; use --force to overwrite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requirements.txt", "settings.py"]
    assert (tmp_path / "requirements.txt").read_text() == "flask\n"


def test_force_overwrites(tmp_path: Path) -> None:
    """With force, existing files are replaced by the generated ones."""
    (tmp_path / "app.py").write_text("print('old')\n")
    scaffold.write(str(tmp_path), force=True)
    assert (tmp_path / "app.py").read_text() == scaffold.APP


def test_settings_without_credentials_put_the_topic_in_the_sandbox(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With no Twilio variables set the topic is in the sandbox; dev has no Redis (embedded), prod has port 0."""
    for name in [*SECRETS, "REDIS_URL"]:
        monkeypatch.delenv(name, raising=False)
    scaffold.write(str(tmp_path))
    settings = load_settings(settings_namespace(tmp_path))
    topic = settings.topics[scaffold.TOPIC]
    assert topic.twilio.sandbox and not topic.validate_signature
    assert list(topic.validators) == ["length", "profanity"]
    assert not settings.profile("dev").redis.configured
    assert settings.profile("dev").port == scaffold.PORT
    assert settings.profile("prod").port == 0
    assert settings.profile("prod").host == "0.0.0.0"


def test_settings_read_secrets_from_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and REDIS_URL come from environment variables and never appear in the written files."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", "redis://:pw-777@redis.example:6379/0")
    scaffold.write(str(tmp_path))
    settings = load_settings(settings_namespace(tmp_path))
    topic = settings.topics[scaffold.TOPIC]
    assert not topic.twilio.sandbox and topic.validate_signature
    assert (topic.twilio.account_sid, topic.twilio.auth_token, topic.twilio.from_number) == tuple(SECRETS.values())
    assert settings.profile("prod").redis.url == "redis://:pw-777@redis.example:6379/0"
    for path in tmp_path.iterdir():
        text = path.read_text()
        assert "secret-token-4242" not in text and "pw-777" not in text


def test_app_registers_a_handler_that_answers_kindly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated app.py builds an App with a handler for its one topic and a friendly greeting."""
    scaffold.write(str(tmp_path))
    settings = types.ModuleType("settings")
    exec(compile((tmp_path / "settings.py").read_text(), "settings.py", "exec"), settings.__dict__)
    monkeypatch.setitem(sys.modules, "settings", settings)
    spec = importlib.util.spec_from_file_location("generated_app", tmp_path / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert list(module.app.handlers) == [scaffold.TOPIC]
    assert module.app.settings.topics[scaffold.TOPIC].name == scaffold.TOPIC
    assert module.greeting("  hi ") == "Hello! You said: hi"
    assert module.greeting("") == "Hello!"


def test_procfile_runs_both_roles_under_twistd() -> None:
    """The Procfile runs web and worker with twistd -n pyrowire."""
    assert scaffold.PROCFILE.splitlines() == [
        "web: twistd -n pyrowire --app app --role web",
        "worker: twistd -n pyrowire --app app --role worker",
    ]


def requirement_lines(direct_url: str | None) -> list[str]:
    """The lines of the generated requirements.txt that are not comments."""
    return [line for line in scaffold.requirements(direct_url).splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(("direct_url", "line"), [
    ('{"url": "file:///src/pyrowire", "dir_info": {}}', "pyrowire[embedded] @ file:///src/pyrowire"),
    ('{"url": "file:///src/pyrowire", "dir_info": {"editable": true}}', "pyrowire[embedded] @ file:///src/pyrowire"),
    ('{"url": "https://git.example/pyrowire.git", "vcs_info": {"vcs": "git", "commit_id": "0123abc"}}',
     "pyrowire[embedded] @ git+https://git.example/pyrowire.git@0123abc"),
    ('{"url": "file:///w/pyrowire-0.9.0-py3-none-any.whl", "archive_info": {}}',
     "pyrowire[embedded] @ file:///w/pyrowire-0.9.0-py3-none-any.whl"),
])
def test_requirements_install_pyrowire_from_where_it_came(direct_url: str, line: str) -> None:
    """requirements.txt names the source this pyrowire was installed from (a folder, a git commit, a wheel)."""
    assert requirement_lines(direct_url) == [line]


def test_requirements_from_an_index_exclude_the_2014_project() -> None:
    """Installed from a package index, the requirement asks for this version or later, never the 2014 0.8.1."""
    assert requirement_lines(None) == [f"pyrowire[embedded]>={pyrowire.__version__}"]
    assert pyrowire.__version__.split(".")[:2] >= ["0", "9"]
    assert "0.8.1" in scaffold.requirements(None)  # the comment says why a bare name would not do


def test_requirements_from_a_folder_say_what_to_name_on_heroku() -> None:
    """A requirement on a local folder comes with the advice to name a reachable source (a git URL) for Heroku."""
    text = scaffold.requirements('{"url": "file:///src/pyrowire", "dir_info": {}}')
    assert "Heroku" in text and "git+https://" in text


def test_gitignore_keeps_out_the_pid_file_and_the_embedded_data(tmp_path: Path) -> None:
    """The generated .gitignore lists twistd.pid and .pyrowire/; an existing .gitignore only gains missing lines."""
    assert {"twistd.pid", ".pyrowire/", ".venv/"} <= set(scaffold.GITIGNORE.split())
    (tmp_path / ".gitignore").write_text("*.log\ntwistd.pid")
    scaffold.write(str(tmp_path))
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["*.log", "twistd.pid"]
    assert lines.count("twistd.pid") == 1 and ".pyrowire/" in lines


def test_test_app_uses_the_app_tester_api() -> None:
    """test_app.py is a pytest-twisted test of AppTester.feed and its result fields, with no Redis or network."""
    tree = ast.parse(scaffold.TEST_APP)
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("pyrowire.testing", "AppTester") in imports and ("app", "app") in imports
    tests = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef)]
    assert len(tests) == 2 and all(t.name.startswith("test_") and ast.get_docstring(t) for t in tests)
    assert all(ast.unparse(t.decorator_list[0]) == "pytest_twisted.ensureDeferred" for t in tests)
    assert f'tester.feed("{scaffold.TOPIC}", body=' in scaffold.TEST_APP
    assert scaffold.TEST_APP.count("async with AppTester(app) as tester:") == 2  # closed, as the tutorial says
    for field in ("result.accepted", "result.answer", "result.sent"):
        assert field in scaffold.TEST_APP
    assert "redis" not in scaffold.TEST_APP.lower().replace("no redis", "")
