"""The explorer in a real browser: `streamlit run dashboards/app.py` as a subprocess on a
free 127.0.0.1 port, driven by Playwright with the Debian chromium (headless). Signs in,
searches, opens an event, verifies it, opens a hostile event (inert), checks the auditor's
pages for plain PII, and saves screenshots under tests/artifacts/."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_explorer_apptest import PASSWORDS, XSS_EVENT_ID, build, find_leaks, sample_event

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def server(demo, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    env = {**os.environ, "AUDITLAKE_LAKE": demo["lake"].uri, "AUDITLAKE_HOME": str(demo["home"]),
           "AUDITLAKE_EXPLORER_USERS": str(demo["users"]), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
           "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(tmp_path_factory.mktemp("cwd")))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(45_000)
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    ctx.close()


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"explorer-{name}.png"), full_page=True)


def wait_idle(pg) -> None:
    """Until the script run is over (Streamlit shows a running indicator meanwhile)."""
    pg.wait_for_timeout(300)
    pg.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') || "
        "!document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.match(/Running|Connecting/)",
        timeout=45_000)
    pg.wait_for_timeout(200)


def sign_in(pg, url: str, user: str) -> None:
    pg.goto(url)
    pg.get_by_role("textbox", name="User name").fill(user)
    pg.get_by_role("textbox", name="Password").fill(PASSWORDS[user][1])
    pg.get_by_role("button", name="Sign in").click()
    pg.get_by_role("heading", name="Overview").wait_for()
    wait_idle(pg)


def open_page(pg, name: str) -> None:
    pg.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).click()
    pg.get_by_role("heading", name=name if name not in ("SQL",) else "SQL console (read-only)").first.wait_for()
    wait_idle(pg)


def test_sign_in_search_open_verify(server, page, demo):
    pg = page
    ev = sample_event(demo["lake"])
    sign_in(pg, server, "ann")
    pg.get_by_text("Live tail: newest sealed events").wait_for()
    pg.wait_for_function("() => document.querySelectorAll("
                         "'[data-testid=\"stVegaLiteChart\"] canvas, [data-testid=\"stVegaLiteChart\"] svg').length >= 2")
    pg.wait_for_timeout(500)
    shot(pg, "1-overview")

    open_page(pg, "Search")
    pg.get_by_label("Subject id").fill(ev["subject_id"])
    pg.get_by_label("Subject id").press("Enter")
    wait_idle(pg)
    pg.get_by_text("matching events").wait_for()
    caption = pg.get_by_text("matching events").inner_text()
    assert int(caption.split()[0].replace(",", "")) >= 1
    shot(pg, "2-search")

    # choose the event in the select box and open it
    box = pg.locator('[data-testid="stSelectbox"]').filter(has_text="Event")
    box.click()
    pg.get_by_role("option", name=ev["event_id"]).click()
    wait_idle(pg)
    pg.get_by_role("button", name="Open event").click()
    pg.get_by_role("heading", name="Chain neighbours").wait_for()
    wait_idle(pg)
    assert ev["event_id"] in pg.content()
    shot(pg, "3-event")

    pg.get_by_role("button", name="Verify this event").click()
    pg.get_by_text("Verified: this event is in the signed, tamper-evident log.").wait_for()
    shot(pg, "4-verified")
    assert not pg.dialogs


def test_hostile_event_is_inert_and_auditor_pages_hold_no_pii(server, page, demo):
    pg = page
    sign_in(pg, server, "ann")
    html = [pg.content()]
    for name in ("Search", "Compliance", "Exports", "SQL"):
        open_page(pg, name)
        html.append(pg.content())
    open_page(pg, "Event")
    pg.get_by_label("Event id").fill(XSS_EVENT_ID)
    pg.get_by_label("Event id").press("Enter")
    pg.get_by_role("heading", name="Chain neighbours").wait_for()
    wait_idle(pg)
    html.append(pg.content())
    shot(pg, "5-hostile-event")
    # the payload is on the page as text, and it never ran
    assert "window.__xss=1" in pg.locator('[data-testid="stJson"]').first.inner_text()
    assert pg.evaluate("() => window.__xss") is None
    assert not pg.dialogs
    assert pg.locator("script", has_text="__xss").count() == 0
    assert pg.locator("img[onerror]").count() == 0
    # an analyst query over every event: PII is masked there too
    open_page(pg, "SQL")
    pg.get_by_label("Query").fill("SELECT * FROM events ORDER BY seq LIMIT 500")
    pg.get_by_role("button", name="Run").click()
    pg.get_by_text("500 rows").wait_for()
    wait_idle(pg)
    html.append(pg.content())
    shot(pg, "6-sql")
    leaked = find_leaks(demo["pii"], html)
    assert not leaked, leaked[:10]
