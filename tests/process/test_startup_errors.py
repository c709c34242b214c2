"""A wrong start-up value ends twistd with one clear line and a non-zero status, never a traceback."""

from __future__ import annotations

import socket

import pytest

from tests.process.harness import Deployment, PyrowireProcess

CASES = [
    (["--app", "app", "--topic", "nope"], "--topic: unknown topic 'nope'"),
    (["--app", "app", "--role", "chef"], "--role: unknown role 'chef'"),
    (["--app", "app", "--profile", "staging"], "--profile: unknown profile 'staging'"),
    (["--app", "broken"], "--app: cannot import 'broken': ModuleNotFoundError: No module named 'no_such_module"),
    (["--app", "partial"], "has no handler"),
    (["--app", "malformed"], "TOPICS['echo'].max_message_length: must be between 1 and 1600"),
    (["--app", "typo"], "TOPICS['echo'].accept_respons: unknown key (did you mean accept_response?)"),
    (["--app", "app", "--listen", "nonsense:what"], "--listen: 'nonsense:what' is not a usable endpoint description: "
                                                    "unknown endpoint type 'nonsense'"),
    (["--app", "app", "--listen", "tcp:notaport"], "--listen: 'tcp:notaport' is not a usable endpoint description: "
                                                   "'notaport' is not a number"),
    (["--app", "app", "--concurrency", "zero"], "--concurrency: must be a number"),
    (["--app", "app", "--redis", "ftp://x"], "--redis: unsupported scheme 'ftp'"),
    (["--app", "app", "--redis", "redis+sentinel://:hunter2@127.0.0.1:26379"],
     "--redis: a redis+sentinel:// URL names its service"),
]


@pytest.mark.parametrize(("options", "expected"), CASES, ids=[c[1][:24] for c in CASES])
def test_bad_start_up_is_one_line(deployment: Deployment, options: list[str], expected: str) -> None:
    """Each wrong option or setting stops start-up with a non-zero status and one line naming it."""
    deployment.expect_errors("pyrowire: error: ")
    process, _ = deployment.twistd(*options)
    code = process.process.wait(15)
    output = process.output
    assert code != 0
    assert expected in output, output
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if "pyrowire: error:" in line]
    assert len(error_lines) == 1, output


@pytest.mark.parametrize("address", ["redis://127.0.0.1:{port}/0", "redis+sentinel://127.0.0.1:{port}/mymaster/0"])
def test_unreachable_redis_names_the_address_without_password(deployment: Deployment, address: str) -> None:
    """Redis (or its Sentinels) not answering ends start-up with one line naming the address, never the
    password, and takes twistd's pid file with it."""
    deployment.expect_errors("pyrowire: error: ")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    shown = address.format(port=port)
    url = shown.replace("://", "://:hunter2secret@")
    process = PyrowireProcess(deployment.dir, ["-n", "pyrowire", "--app", "app", "--redis", url, "--listen", "tcp:0"],
                              deployment.env())
    deployment.processes.append(process)
    code = process.process.wait(15)
    output = process.output
    assert code != 0
    assert f"cannot reach Redis at {shown}" in output
    assert "hunter2secret" not in output
    assert "Traceback" not in output
    assert "Scheduling retry" not in output  # the connections' retries are not logged one by one
    assert not (deployment.dir / "twistd.pid").exists()


def test_listen_port_in_use_is_one_line_and_starts_nothing(deployment: Deployment) -> None:
    """A listen port already taken ends start-up before anything starts: the one --listen line is all the output,
    no embedded Redis was started and no pid file is left behind."""
    deployment.expect_errors("pyrowire: error: ")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        process = PyrowireProcess(deployment.dir, ["-n", "pyrowire", "--app", "app", "--redis", "embedded",
                                                   "--listen", f"tcp:port={port}:interface=127.0.0.1"],
                                  deployment.env())
        deployment.processes.append(process)
        code = process.process.wait(15)
    assert code == 1
    assert process.output == (f"pyrowire: error: --listen: cannot listen on 127.0.0.1:{port}: address already in use "
                              "(another process listens there; choose another with --listen or PORT)\n")
    assert not (deployment.dir / ".pyrowire").exists()
    assert not (deployment.dir / "twistd.pid").exists()


def test_tac_without_an_app_names_pyrowire_app(deployment: Deployment) -> None:
    """twistd -ny pyrowire.tac without PYROWIRE_APP says to set PYROWIRE_APP (the tac has no --app)."""
    deployment.expect_errors("pyrowire: error: ")
    process, _ = deployment.twistd(tac=True)
    code = process.process.wait(15)
    output = process.output
    assert code != 0
    assert "pyrowire: error: PYROWIRE_APP: name the application module, e.g. PYROWIRE_APP=app" in output
    assert "--app" not in output
    assert "Traceback" not in output
