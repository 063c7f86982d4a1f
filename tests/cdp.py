"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (stdlib only).

Chromium reads commands from fd 3 and writes replies and events to fd 4, each a JSON message
ended by a NUL byte. No port is opened and no websocket library is needed. The browser runs in its
own process group with a private profile directory; `close()` ends the group and removes the
directory, also after a failure.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
PR_SET_PDEATHSIG = 1
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    # Belt and braces: a report must not reach any network; no name resolves, and requests that
    # are not file: or data: are failed by the interception in Page.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


class CDPError(RuntimeError):
    pass


class Browser:
    def __init__(self, executable: str = CHROMIUM, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="splicebench-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()

        libc = ctypes.CDLL(None, use_errno=True)

        def child_fds():
            # The browser dies with this process, even when it is killed without a chance to clean up.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            # Move both ends out of the way first, so that neither is overwritten by the other's dup2.
            hi_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 100)
            hi_w = fcntl.fcntl(evt_w, fcntl.F_DUPFD, 100)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        try:
            self.proc = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(3, 4), preexec_fn=child_fds, close_fds=True,
                start_new_session=True)
        except BaseException:
            os.close(self._cmd_w)
            os.close(self._evt_r)
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        finally:
            os.close(cmd_r)
            os.close(evt_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self._closed = False

    # -- transport ---------------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._cmd_w, data)
            data = data[n:]

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for the browser")
            r, _, _ = select.select([self._evt_r], [], [], min(left, 1.0))
            if r:
                chunk = os.read(self._evt_r, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                    raise CDPError(f"the browser closed its pipe (exit {self.proc.poll()}): {err}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._send(msg)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_one(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise CDPError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._on_event(m)

    def _on_event(self, m: dict[str, Any]) -> None:
        if "method" in m:
            self.events.append(m)
            if m["method"] == "Fetch.requestPaused":
                self._handle_request(m)

    def _handle_request(self, m: dict[str, Any]) -> None:
        p = m["params"]
        url = p["request"]["url"]
        method = "Fetch.continueRequest" if url.startswith(("file:", "data:")) else "Fetch.failRequest"
        params = {"requestId": p["requestId"]}
        if method == "Fetch.failRequest":
            params["errorReason"] = "BlockedByClient"
        self._next_id += 1
        self._send({"id": self._next_id, "method": method, "params": params, "sessionId": m.get("sessionId")})

    def wait_event(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        for e in self.events:
            if e["method"] == name:
                return e
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_one(deadline)
            self._on_event(m)
            if m.get("method") == name:
                return m

    def pump(self, seconds: float) -> None:
        """Collect events for a while (e.g. late console messages)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._on_event(self._read_one(deadline))
        except CDPError as e:
            if "timed out" not in str(e):
                raise

    # -- pages -------------------------------------------------------------------------------

    def open_page(self, width: int = 1280, height: int = 900) -> "Page":
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for method, params in (("Runtime.enable", {}), ("Log.enable", {}), ("Network.enable", {}),
                               ("Page.enable", {}), ("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}),
                               ("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})):
            page.call(method, params)
        return page

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.poll() is None:
                try:
                    self._next_id += 1
                    self._send({"id": self._next_id, "method": "Browser.close", "params": {}})
                    self.proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the browser's own group: zygote, renderers
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for fd in (self._cmd_w, self._evt_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.proc.stderr:
                self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session, timeout)

    def navigate(self, url: str) -> None:
        self.browser.events = [e for e in self.browser.events if e["method"] != "Page.loadEventFired"]
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise CDPError(f"navigate {url}: {res['errorText']}")
        self.browser.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise CDPError(f"evaluate: {res['exceptionDetails'].get('text')}: {expression[:80]}")
        return res["result"].get("value")

    def screenshot(self, clip: dict[str, float] | None = None, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            m = self.call("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": m["width"], "height": m["height"]}
        if clip:
            params["clip"] = {**clip, "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def pdf(self) -> bytes:
        return base64.b64decode(self.call("Page.printToPDF", {"printBackground": False}, timeout=120)["data"])

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        out = []
        for e in self.browser.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        """URLs of every request the page made (seen by Network or by the interception)."""
        urls = []
        for e in self.browser.events:
            if e["method"] == "Network.requestWillBeSent":
                urls.append(e["params"]["request"]["url"])
            elif e["method"] == "Fetch.requestPaused":
                urls.append(e["params"]["request"]["url"])
        return urls
