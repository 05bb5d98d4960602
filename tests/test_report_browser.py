"""The report in a real browser: Debian's headless Chromium, driven over the DevTools protocol.

Chromium talks DevTools over a pair of pipes (`--remote-debugging-pipe`: it reads commands on
fd 3 and writes replies and events on fd 4, each a NUL-terminated JSON message), so the test
needs no websocket library. It collects console errors, uncaught exceptions and failed loads,
checks that every figure rendered and every sample image decoded, and saves a full-page
screenshot under `artifacts/`. `scripts/install-browser.sh` installs Chromium.
"""

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from runs import make_run

from analysis.report import write_comparison, write_report
from ganlab import results

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
FIGURES = (
    "fig-effects",
    "fig-convergence",
    "fig-distribution",
    "fig-divergence",
    "fig-modes-heatmap",
    "fig-modes-loss",
    "fig-precision-recall",
    "fig-importance",
    "fig-parallel",
    "fig-budget",
)


class Browser:
    """A headless Chromium and one page, over the DevTools pipe."""

    def __init__(self, profile: Path):
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        # The child's ends must not sit on fds 3 or 4 themselves (free under pytest's capture),
        # or the shell's redirections below would overwrite one with the other.
        to_child, from_child = (_above(fd, 10) for fd in (to_child, from_child))
        binary = shutil.which("chromium")
        args = [*FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        # Chromium wants the pipe on fds 3 and 4 exactly; bash moves them there (dash cannot
        # redirect descriptors above 9).
        self._process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_child} 4>&{from_child}', binary, *args],
            pass_fds=(to_child, from_child),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page"):
            self.page(f"{domain}.enable")
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, method: str, **params):
        return self.call(method, session=self._session, **params)

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def evaluate(self, expression: str):
        result = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return result["result"].get("value")

    def open(self, path: Path, ready: str, timeout: float = 30) -> None:
        """Navigate to `path` and wait until the JS expression `ready` is true."""
        self.events.clear()
        self.page("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"document.readyState === 'complete' && ({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path.name} never became ready: {ready}")
            time.sleep(0.1)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads since the last `open`."""
        self.page("Runtime.evaluate", expression="0")  # flush events queued before this point
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description", details["text"]))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self, path: Path) -> None:
        """The whole page, not just the viewport."""
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.page(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):  # it may be gone
            self.call("Browser.close", timeout=5)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._read)
        os.close(self._write)


def _above(fd: int, lowest: int) -> int:
    """`fd` moved to a descriptor number >= `lowest`."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return moved


@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromium") is None:  # scripts/test.sh installs it: a missing one is a failure
        pytest.fail("chromium is not installed: run scripts/install-browser.sh (as root)")
    with tempfile.TemporaryDirectory(prefix="ganlab-chromium-") as profile:
        opened = Browser(Path(profile))
        try:
            yield opened
        finally:
            opened.close()


RENDERED = (
    "Array.from(document.querySelectorAll('.plotly-graph-div'))"
    ".every(d => d.querySelector('svg.main-svg'))"
    " && Array.from(document.images).every(i => i.complete)"
)


def rendered_figures(browser: Browser) -> list[str]:
    return browser.evaluate(
        "Array.from(document.querySelectorAll('.plotly-graph-div'))"
        ".filter(d => d.querySelector('svg.main-svg')).map(d => d.id)"
    )


def test_error_check_catches_errors(browser, tmp_path):
    # The checks below pass only if errors are seen at all: a page with each kind of error.
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><script>console.error('deliberate console error');</script>"
        "<script>notDefinedAnywhere();</script><img src='missing.png'></body></html>"
    )
    browser.open(page, "true")
    errors = "\n".join(browser.errors())
    assert "deliberate console error" in errors
    assert "notDefinedAnywhere" in errors
    assert "ERR_FILE_NOT_FOUND" in errors


def test_image_report_renders(browser, tmp_path):
    run = make_run(
        tmp_path / "run", n_configs=16, seeds=3, evals=8, dataset="digits", with_journal=True
    )
    report = write_report(run)
    browser.open(report, RENDERED)
    assert browser.errors() == []
    rendered = rendered_figures(browser)
    for figure in FIGURES:
        assert figure in rendered
    images = browser.evaluate(
        "Array.from(document.querySelectorAll('img.sample-grid'))"
        ".map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    # Real data, then 3 best and 3 worst configurations with up to 3 seeds each.
    assert len(images) >= 1 + 6
    assert all(complete and width > 0 and height > 0 for complete, width, height in images)
    browser.screenshot(ARTIFACTS / "report-digits.png")
    assert (ARTIFACTS / "report-digits.png").stat().st_size > 10_000


STATUS_WORDS = ("completed", "collapsed", "diverged", "pruned", "running", "error")


def texts(browser: Browser, selector: str) -> list[str]:
    return browser.evaluate(
        f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(e => e.textContent)"
    )


def test_quickstart_report_shows_early_stopped_trials_as_what_they_are(browser, tmp_path):
    # The quickstart's shape: ring8, 12 configurations × 3 seeds, objective good_modes, ASHA
    # stopping trials at its first rung (here step 300 of 1,000).
    run = make_run(tmp_path / "run", n_configs=12, seeds=3, evals=10, metric="good_modes", rung=3)
    trials, _ = results.load(run)
    reach = trials.groupby("trial_id").steps_done.max()
    assert trials.status.eq("pruned").any() and (reach == 1000).any()
    report = write_report(run)
    browser.open(report, RENDERED)
    assert browser.errors() == []
    rendered = rendered_figures(browser)
    for figure in (*FIGURES, "fig-samples"):
        assert figure in rendered
    points = browser.evaluate(
        "document.querySelectorAll('#fig-samples .scatterlayer .point').length"
    )
    assert points > 100  # the 2-D samples are drawn as points

    # Every configuration shown carries how far it trained and how its seeds ended.
    ranked = results.summarise(trials)
    rows = browser.evaluate(
        "Array.from(document.querySelectorAll('#summary table.best tbody tr')).map(r => "
        "[r.title, r.querySelector('.col-at_step').textContent, "
        "r.querySelector('.col-statuses').textContent])"
    )
    assert [r[0] for r in rows] == [f"config {c}" for c in ranked.config_id[:10]]
    for (_, step, statuses), expected in zip(rows, ranked.itertuples(), strict=False):
        assert step == str(expected.at_step) and statuses == expected.statuses
        assert any(word in statuses for word in STATUS_WORDS)
    legend = texts(browser, "#fig-convergence .legendtext")
    titles = texts(browser, "#fig-samples .annotation-text")
    grids = texts(browser, "#samples h3")
    assert legend and titles
    for label in legend + titles + grids:
        assert re.search(r"\d steps: |step \d", label), label
        assert any(word in label for word in STATUS_WORDS), label
    stopped = [t for t in legend + titles if "pruned" in t]
    assert stopped and all("300 steps" in t or "step 300" in t for t in stopped)

    # No effect statement compares unequal budgets: each names the one step all compared
    # trials reached, which is where ASHA stopped the earliest ones.
    step = int(browser.evaluate("document.querySelector('#effects .effects').dataset.step"))
    assert step == reach[trials.groupby("trial_id").status.agg(
        lambda s: not s.eq("diverged").all())].min() == 300  # fmt: skip
    how = texts(browser, "#effects p.how")[0]
    assert f"Compared at step {step:,}, the last step every trial that ran reached" in how
    sentences = texts(browser, "#effects .effects > p")
    assert sentences and all(s.startswith(f"At step {step:,}: ") for s in sentences)
    forest = texts(browser, "#fig-effects .gtitle")[0]
    assert f"at step {step:,}" in forest
    assert not any("step" in s and f"step {step:,}" not in s for s in sentences)
    # The effects' numbers are a table that sorts on a click of its header.
    column = "#effects table.sortable td:nth-child(5)"
    browser.evaluate("document.querySelector('#effects table.sortable th:nth-child(5)').click()")
    effects = [
        float(x)
        for x in browser.evaluate(
            f"Array.from(document.querySelectorAll('{column}')).map(td => td.dataset.sort)"
        )
    ]
    assert len(effects) > 1 and effects == sorted(effects)  # fmt: skip
    # The caption no longer says a stopping line means that every seed diverged.
    assert "whose seeds all diverged" not in texts(browser, "#convergence p.how")[0]
    browser.screenshot(ARTIFACTS / "report-quickstart.png")


def test_comparison_renders(browser, tmp_path):
    a = make_run(tmp_path / "a", n_configs=10, seeds=3, evals=4, dataset="ring8")
    b = make_run(tmp_path / "b", n_configs=10, seeds=3, evals=4, dataset="ring8", seed=1)
    page = write_comparison(a, b, tmp_path / "compare.html")
    browser.open(page, RENDERED)
    assert browser.errors() == []
    assert set(rendered_figures(browser)) == {"fig-budget", "fig-objective", "fig-divergence"}
