"""``argosy ui``: the web UI on the local state folder, behind its guard (one-time token ->
session cookie, exact Host, CSRF), as a real process; a run launched from it executes on this
machine. The pages themselves are tested in a browser against a server (test_ui_browser.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

PIPE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def hello(name: str) -> str:
        print(f"hello {name}")
        return f"hello {name}"

    @pipeline
    def greet(name: str = "world"):
        hello(name=name)
    """
)
LINK = re.compile(r"(http://127\.0\.0\.1:(\d+))/\?token=([\w-]+)")


@dataclass
class LocalUi:
    base: str
    host: str
    token: str
    process: subprocess.Popen[bytes]
    home: Path


@pytest.fixture(scope="module")
def local_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUi]:
    work = tmp_path_factory.mktemp("local-ui")
    (work / "greetings.py").write_text(PIPE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(work / ".argosy")
    argosy = [sys.executable, "-m", "argosy"]
    done = subprocess.run([*argosy, "run", "greetings.py:greet"], cwd=work, env=env,
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    log = work / "ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*argosy, "ui", "--port", "0", "--no-open"], cwd=work,
                                   env=env, stdout=out, stderr=out)  # fmt: skip
    deadline = time.monotonic() + 60
    while (found := LINK.search(log.read_text())) is None:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield LocalUi(found.group(1), f"127.0.0.1:{found.group(2)}", found.group(3), process,
                  work / ".argosy")  # fmt: skip
    process.terminate()
    process.wait(30)


def test_the_guard_and_a_launch(local_ui: LocalUi) -> None:
    base = local_ui.base
    html = {"Accept": "text/html"}
    # no cookie: nothing but a page saying how to sign in
    r = httpx.get(f"{base}/t/default/runs", headers=html)
    assert r.status_code == 401 and "argosy ui" in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert httpx.get(f"{base}/api/v1/tenants/default/runs").status_code == 401
    # another Host (DNS rebinding) is refused, and the token is not spent on it
    r = httpx.get(f"{base}/?token={local_ui.token}", headers={"Host": f"evil.example:{base[-5:]}"})
    assert r.status_code == 403
    r = httpx.get(f"{base}/?token=not-the-token")
    assert r.status_code == 403
    # the one-time token becomes a session cookie, once
    r = httpx.get(f"{base}/?token={local_ui.token}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookies = dict(r.cookies)
    assert set(cookies) == {"argosy_local", "argosy_csrf"}
    set_cookie = r.headers.get_list("set-cookie")
    assert any(
        "argosy_local" in c and "HttpOnly" in c and "SameSite=strict" in c for c in set_cookie
    )
    assert httpx.get(f"{base}/?token={local_ui.token}").status_code == 403  # used
    with httpx.Client(base_url=base, cookies=cookies, headers=html) as client:
        r = client.get("/", follow_redirects=True)
        assert r.status_code == 200 and r.url.path == "/t/default/runs"
        assert "greet" in r.text
        run_id = re.search(r"/t/default/runs/([0-9A-Z]{26})", r.text)
        assert run_id is not None
        page = client.get(f"/t/default/runs/{run_id.group(1)}")
        assert page.status_code == 200 and 'data-node="hello"' in page.text
        assert client.get("/t/default/runs", headers={"Host": "localhost"}).status_code == 403
        # a change needs the CSRF token
        body = {"values": {"name": "<b>local</b>"}}
        r = client.post("/t/default/pipelines/greet/launch", json=body)
        assert r.status_code == 403 and "CSRF" in r.text
        r = client.post("/t/default/pipelines/greet/launch", json=body,
                        headers={"X-CSRF-Token": cookies["argosy_csrf"]})  # fmt: skip
        assert r.status_code == 201, r.text
        launched = r.json()["run_id"]
        deadline = time.monotonic() + 120
        while True:  # executed on this machine by a background process
            run = client.get(f"/api/v1/tenants/default/runs/{launched}").json()
            if run["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, run
            time.sleep(0.3)
        assert run["status"] == "succeeded" and run["parameters"] == {"name": "<b>local</b>"}
        step = client.get(f"/t/default/runs/{launched}/steps/hello")
        assert "hello &lt;b&gt;local&lt;/b&gt;" in step.text
        # a field that does not fit its type is named
        r = client.post(
            "/t/default/pipelines/greet/launch", json={"values": {"nme": "x"}},
            headers={"X-CSRF-Token": cookies["argosy_csrf"], "Accept": "application/json"},
        )  # fmt: skip
        assert r.status_code == 422 and "nme" in r.json()["errors"]
    # a cookie that is not the session's is refused
    r = httpx.get(f"{base}/t/default/runs", cookies={"argosy_local": "guess"}, headers=html)
    assert r.status_code == 401
