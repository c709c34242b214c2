"""Who may see the console of a real daemon, over plain HTTP (SPEC section 10)."""

from __future__ import annotations

import base64

from tests.process.harness import Deployment, request

PASSWORD = "console-password-for-the-test"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_with_a_password_it_asks_for_basic_credentials(deployment: Deployment) -> None:
    process, base = deployment.twistd("--app", "console_app", "--role", "web",
                                      env=deployment.env(ENV="quiet", PYROWIRE_CONSOLE_PASSWORD=PASSWORD))
    process.wait_healthy(base)
    status, headers, body = request("GET", base + "/console/")
    assert status == 401 and headers["www-authenticate"].startswith("Basic realm=")
    assert request("GET", base + "/console/", headers=_basic("ops", "wrong"))[0] == 401
    status, _, body = request("GET", base + "/console/api/overview", headers=_basic("anyone", PASSWORD))
    assert status == 200 and b'"echo"' in body
    # behind a proxy too: the password is what counts
    assert request("GET", base + "/console/", headers={**_basic("x", PASSWORD), "X-Forwarded-For": "203.0.113.5"})[0] \
        == 200
    assert PASSWORD not in process.output


def test_without_a_password_a_profile_that_is_not_debug_has_no_console(deployment: Deployment) -> None:
    process, base = deployment.twistd("--app", "console_app", "--role", "web", env=deployment.env(ENV="quiet"))
    process.wait_healthy(base)
    assert request("GET", base + "/console/")[0] == 404
    assert request("GET", base + "/console/api/overview")[0] == 404


def test_without_a_password_a_debug_profile_serves_loopback_clients_without_a_proxy(deployment: Deployment) -> None:
    process, base = deployment.twistd("--app", "console_app", "--role", "web")
    process.wait_healthy(base)
    assert request("GET", base + "/console/")[0] == 200
    assert request("GET", base + "/console/", headers={"X-Forwarded-For": "127.0.0.1"})[0] == 404
    assert request("GET", base + "/console/api/overview", headers={"X-Forwarded-For": "198.51.100.1"})[0] == 404
