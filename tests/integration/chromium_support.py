"""A headless Chromium (Debian's `chromium`) that opens Label Studio pages as a logged-in person,
reads what the page shows and saves a screenshot, driven over the DevTools protocol with
aiohttp's WebSocket client (already installed).

The browser stays on loopback: every other host resolves to nothing and any proxied request goes
to a dead port. Where Chromium is missing the tests skip with the reason, or fail under
ACTIVE_STREAM_REQUIRE_APACHE_KAFKA=1 (CI installs it).
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from services.label_studio.server import USER, LabelStudioServer
from tests.integration.label_studio_support import unavailable

SCREENSHOT_DIR_ENV = "ACTIVE_STREAM_SCREENSHOT_DIR"  # also keep copies there (docs/img)
# A page of Label Studio's single-page app renders in a second or two; 60 s covers a loaded CI.
PAGE_TIMEOUT_S = 60.0


@dataclass
class Shot:
    """What a page showed: its text, the labels of its checked inputs, and the PNG."""

    text: str
    checked: list[str]
    png: Path


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    unavailable("no Chromium: `apt-get install chromium` (Debian) to run the browser test")
    raise AssertionError("unreachable")


def login_cookies(server: LabelStudioServer) -> list[dict[str, str]]:
    """Log in through the login form, as a person would; the session cookies."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(server.url + "/user/login/", timeout=30).read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": match.group(1), "email": USER,
                                   "password": server.password}).encode()
    request = urllib.request.Request(server.url + "/user/login/", data=form,
                                     headers={"Referer": server.url + "/user/login/"})
    opener.open(request, timeout=30).read()
    cookies = [{"name": c.name, "value": c.value or ""} for c in jar]
    assert any(c["name"] == "sessionid" for c in cookies), "login failed"
    return cookies


class _Browser:
    def __init__(self, binary: str, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--proxy-server=127.0.0.1:9",  # loopback bypasses it; anything else goes nowhere
             "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
             "--window-size=1440,900", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.proc.poll() is not None:
                raise AssertionError(f"Chromium exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise AssertionError("Chromium did not open its DevTools port")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Page:
    """One tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self.ids)
        await self.ws.send_json({"id": call, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=PAGE_TIMEOUT_S)
            if message.get("id") == call:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer.get("result", {}).get("value")

    async def open(self, url: str, ready: str) -> None:
        """Navigate, then wait until the JavaScript condition `ready` holds."""
        await self.send("Page.navigate", url=url)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not await self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"{url}: not ready ({ready}); page text:\n{text[:2000]}")
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # let images and late renders settle before the screenshot

    async def shot(self, path: Path) -> Shot:
        text = await self.evaluate("document.body.innerText")
        # Label Studio's choices are checkboxes named after the choice.
        checked = await self.evaluate(
            "[...document.querySelectorAll('input[type=checkbox]:checked')].map(e => e.name)")
        png = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(png["data"]))
        return Shot(str(text or ""), list(checked or []), path)


async def _drive(port: int, server: LabelStudioServer, cookies: list[dict[str, str]],
                 pages: dict[str, tuple[str, str]], out: Path) -> dict[str, Shot]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = _Page(ws)
            await page.send("Page.enable")
            await page.send("Network.enable")
            for cookie in cookies:
                await page.send("Network.setCookie", url=server.url, **cookie)
            shots = {}
            for name, (path, ready) in pages.items():
                await page.open(server.url + path, ready)
                shots[name] = await page.shot(out / f"label-studio-{name}.png")
            return shots


def project_screenshots(server: LabelStudioServer, project_id: int, task_id: int,
                        out: Path) -> dict[str, Shot]:
    """The project's task list ("tasks") and one task in the editor ("task")."""
    binary = chromium()
    cookies = login_cookies(server)
    pages = {
        "tasks": (f"/projects/{project_id}/data",
                  "document.querySelectorAll('.dm-table__row-wrapper, [class*=row-wrapper]')"
                  ".length > 0"),
        "task": (f"/projects/{project_id}/data?task={task_id}",
                 "document.querySelectorAll('input[type=checkbox]:checked').length > 0"),
    }
    # Chromium may still write to its profile while it exits: cleanup errors are not ours.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        browser = _Browser(binary, Path(profile))
        try:
            shots = asyncio.run(_drive(browser.port(), server, cookies, pages, out))
        finally:
            browser.close()
    keep = os.environ.get(SCREENSHOT_DIR_ENV)
    if keep:
        for shot in shots.values():
            shutil.copy(shot.png, Path(keep) / shot.png.name)
    return shots
