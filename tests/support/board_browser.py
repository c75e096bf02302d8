"""Drive the system's headless Chromium over the DevTools protocol, with aiohttp.

No browser automation package: Chromium is started as a subprocess with
``--remote-debugging-port=0``, the port is read from ``DevToolsActivePort`` in
its (fresh, empty) profile directory, and the page target is driven over one
WebSocket with the handful of CDP commands a board test needs (navigate,
evaluate, mouse clicks, text input, viewport, screenshot). The process runs in
its own session and its whole process group is killed on close, so no renderer
outlives a test, also when the test fails.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = Path(os.environ.get("ASTPRESENCE_CHROMIUM", "/usr/bin/chromium"))

#: Flags from the machine notes: no GPU, no sandbox (root), no background
#: traffic to the (closed) network, a throw-away profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class BrowserError(AssertionError):
    """The browser could not be started or a page command failed."""


class Chromium:
    """One headless Chromium process with one page."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.exceptions: list[str] = []  # uncaught JS exceptions on the page
        self.console: list[str] = []  # console messages and browser log entries
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def launch(cls, workdir: Path, *, width: int = 1280, height: int = 900,
                     timeout: float = 20.0) -> Chromium:
        if not CHROMIUM.exists():
            raise BrowserError(
                f"{CHROMIUM} not found: the board tests need Debian's chromium package "
                "(.ci/run installs it; locally: apt-get install -y chromium)")
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True)
        log = workdir / "chromium.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,  # its own process group, killed as a whole
            )
        browser = cls(proc, log)
        try:
            await browser._connect(profile / "DevToolsActivePort", timeout)
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _connect(self, port_file: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            text = port_file.read_text() if port_file.exists() else ""
            if text.count("\n") >= 1:
                break
            if self.proc.returncode is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium gave no DevTools port within {timeout} s:\n"
                                   f"{self.log_tail()}")
            await asyncio.sleep(0.05)
        port = int(text.splitlines()[0])
        self._http = aiohttp.ClientSession()
        page_ws = None
        while page_ws is None:
            async with self._http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page_ws = next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"),
                           None)
            if page_ws is None:
                if time.monotonic() > deadline:
                    raise BrowserError("chromium has no page target")
                await asyncio.sleep(0.05)
        self._ws = await self._http.ws_connect(page_ws, max_msg_size=0)
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Log.enable")

    async def close(self) -> None:
        """Kill the browser (its whole process group) and release everything."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- protocol ------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if "id" in data:
                    fut = self._pending.pop(data["id"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(data)
                else:
                    self._on_event(data.get("method", ""), data.get("params", {}))
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(BrowserError("the DevTools connection closed"))
            self._pending.clear()

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            self.exceptions.append(exc.get("description") or details.get("text", "?"))
        elif method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            where = f" ({entry['url']})" if entry.get("url") else ""
            self.console.append(f"log.{entry.get('level')}: {entry.get('text')}{where}")

    async def send(self, method: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        if self._ws is None or self._ws.closed:
            raise BrowserError("not connected to chromium")
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    # -- page ------------------------------------------------------------------

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (awaited if it is a promise)."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JS error in {expression!r}: {text}")
        return result.get("result", {}).get("value")

    async def goto(self, url: str, timeout: float = 10.0) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(f"location.href === {json.dumps(url)} && "
                            "document.readyState === 'complete'", timeout, f"load of {url}")

    async def reload(self, timeout: float = 10.0) -> None:
        await self.evaluate("window.__reloading = true")
        await self.send("Page.reload", ignoreCache=True)
        await self.wait_for("!window.__reloading && document.readyState === 'complete'",
                            timeout, "reload")

    async def wait_for(self, expression: str, timeout: float = 5.0,
                       what: str | None = None) -> Any:
        """Poll a JS expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            try:
                value = await self.evaluate(expression)
            except BrowserError as exc:
                # A navigation may destroy the context between polls; retry.
                if "context" not in str(exc).lower():
                    raise
            if value:
                return value
            if time.monotonic() > deadline:
                try:
                    page = await self.evaluate("document.body.innerText")
                except BrowserError as exc:
                    page = f"({exc})"
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what or expression} "
                    f"(last value {value!r}); JS exceptions: {self.exceptions}; "
                    f"console: {self.console[-10:]}; page text:\n{str(page)[:2000]}")
            await asyncio.sleep(0.05)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (must be visible)."""
        box = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect();
                return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null;
            }})()""")
        if not box:
            raise BrowserError(f"{selector} is missing or not visible")
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y,
                            button="left", clickCount=1)

    async def fill(self, selector: str, text: str) -> None:
        """Focus a field, clear it and type ``text`` (as real input events)."""
        found = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return false;
                el.focus();
                el.value = '';
                el.dispatchEvent(new Event('input', {{bubbles: true}}));
                return document.activeElement === el;
            }})()""")
        if not found:
            raise BrowserError(f"{selector} is missing or cannot take focus")
        if text:
            await self.send("Input.insertText", text=text)

    async def select(self, selector: str, value: str) -> None:
        """Choose an option of a <select> as a user would (change event)."""
        ok = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el || ![...el.options].some(o => o.value === {json.dumps(value)}))
                    return false;
                el.focus();
                el.value = {json.dumps(value)};
                el.dispatchEvent(new Event('input', {{bubbles: true}}));
                el.dispatchEvent(new Event('change', {{bubbles: true}}));
                return true;
            }})()""")
        if not ok:
            raise BrowserError(f"{selector} has no option {value!r}")

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=mobile)

    async def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page (beyond the viewport), saved to ``path``."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        result = await self.send(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                  "scale": 1})
        data = base64.b64decode(result["data"])
        path.write_bytes(data)
        return data
