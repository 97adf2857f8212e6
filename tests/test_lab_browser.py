"""The lab extension in a real browser: a real `jupyter lab` / `jupyter notebook` on localhost, Debian's Chromium.

The server runs inside a 1 GiB memory cgroup (the safety rule: the MemoryBudgetError cell allocates), with the
server extension `kernel_sentinel.server` and the prebuilt lab extension (`make labextension`). The notebooks run
on the sentinel kernel (installed into a temporary prefix) or on the stock ipykernel. What the user sees is read
from the page: the notification, its Details dialog, the restore dialog, the variables back in a cell, the status
bar item turning amber and red. Screenshots go to ``$KERNEL_SENTINEL_SCREENSHOTS`` (docs/screenshots when made for
the README) or to the test's temporary folder. The death -> notification latency is measured and printed (no
timed assertion: the figure goes in the README).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from kernel_sentinel.confine import ConfineError, MemoryCgroup, confined_command

GiB = 1 << 30
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN = "ks-lab-test-token"
KERNEL_BUDGET = "400M"  # the sentinel kernel's budget (`kernel-sentinel install --memory-limit`)
SENTINEL_KERNEL = "python3-sentinel"
DEATH_SCHEMA = "https://events.kernel-sentinel.dev/kernel_death"

# Records the moment each notification toast enters the page, in the page's clock (same machine: same clock).
TOAST_WATCH = """
window.__ksToasts = [];
new MutationObserver(() => {
  for (const t of document.querySelectorAll('.Toastify__toast')) {
    if (!t.__ksSeen) { t.__ksSeen = Date.now(); window.__ksToasts.push({t: t.__ksSeen, el: t}); }
  }
}).observe(document, {childList: true, subtree: true});
"""


def _lab_extension_dir() -> Path:
    return Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "kernel-sentinel"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One Jupyter server we started (in its own session, so we stop only what we started)."""

    url: str
    root: Path
    home: Path
    proc: subprocess.Popen
    log: Path

    def api(self, path: str) -> object:
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of this server (the next test gets the memory group to itself).

        A DELETE that lands while the server's restarter is restarting a kernel that just died gets a 500 from
        jupyter_client (``km.ready.exception()`` on a future not yet done: InvalidStateError); it is sent again
        once the restart is through. A kernel already gone (404) is shut down.
        """
        for k in self.api("/api/kernels"):
            req = urllib.request.Request(f"{self.url}/api/kernels/{k['id']}", method="DELETE",
                                         headers={"Authorization": f"token {TOKEN}"})
            for attempt in range(20):
                try:
                    urllib.request.urlopen(req, timeout=30).close()
                    break
                except urllib.error.HTTPError as e:
                    if e.code == 404:
                        break
                    if e.code != 500 or attempt == 19:
                        raise
                    time.sleep(0.5)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: the server and its kernels
                self.proc.wait(10)


def _write_settings(settings: Path) -> None:
    """Switch off Lab's "get notified about official Jupyter news?" prompt (and its update check)."""
    d = settings / "@jupyterlab" / "apputils-extension"
    d.mkdir(parents=True, exist_ok=True)
    (d / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _start_server(app: str, work: Path, group: MemoryCgroup, server_extension: bool = True) -> Server:
    work.mkdir(parents=True, exist_ok=True)
    root, home, prefix, settings = work / "root", work / "home", work / "prefix", work / "settings"
    for d in (root, home, settings):
        d.mkdir(exist_ok=True)
    _write_settings(settings)
    # The server extension on (or off), whatever the package's jupyter_server_config.d file says.
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"kernel_sentinel.server": server_extension}}}))
    # The sentinel kernel as users install it for a budget: its own memory group (a child of the server's).
    install = subprocess.run([sys.executable, "-m", "kernel_sentinel", "install", "--prefix", str(prefix),
                              "--memory-limit", KERNEL_BUDGET],
                             capture_output=True, text=True, timeout=60)
    assert install.returncode == 0, install.stderr
    env = dict(os.environ)
    env.update({
        "KERNEL_SENTINEL_HOME": str(home),
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(work / "config"),
    })
    port = _free_port()
    module = "jupyterlab" if app == "lab" else "notebook"
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    argv = [sys.executable, "-m", module, "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}",
            f"--{app_class}.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # CI runs as root
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(confined_command(argv, cgroup=group), env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", root, home, proc, log)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter {app} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("/api/status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"jupyter {app} did not answer in 120 s:\n{server.log_tail()}")
            time.sleep(0.3)


def _notebook(path: Path, kernel: str, cells: list[str]) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path.name


def _started(app: str, tmp_path_factory: pytest.TempPathFactory, group: MemoryCgroup, **kwargs) -> Server:
    """Return a running server of ``app`` ("lab" or "notebook") with the built lab extension, in ``group``."""
    if not (_lab_extension_dir() / "package.json").exists():
        pytest.fail(f"the lab extension is not built into {_lab_extension_dir()}: run `make labextension`")
    return _start_server(app, tmp_path_factory.mktemp(app), group, **kwargs)


@contextmanager
def _page(browser) -> Iterator[object]:
    """Yield a fresh browser page (its own context: no cookies or storage from another test), closed after."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Return a Chromium driven by Playwright; skips (with the reason) only when Chromium cannot be launched."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # part of the test extra: a missing one is a broken install, not a skip
        pytest.fail(f"playwright is not installed: {exc}")
    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as exc:
        pw.stop()
        pytest.skip(f"Chromium cannot be launched from {CHROMIUM} ({str(exc).splitlines()[0]}); "
                    "make test installs it with apt-get where it can")
    yield chromium
    chromium.close()
    pw.stop()


@pytest.fixture(scope="module")
def server_group() -> Iterator[MemoryCgroup]:
    """Return a 1 GiB memory cgroup for the Jupyter server and its kernels (removed after the module)."""
    try:
        group = MemoryCgroup.create(GiB, prefix="ks-test")
    except ConfineError as exc:
        pytest.skip(f"needs a memory cgroup for the server (the MemoryBudgetError cell allocates): {exc}")
    yield group
    group.remove()


@pytest.fixture(scope="module")
def lab(browser, server_group, tmp_path_factory) -> Iterator[Server]:
    """Return a running `jupyter lab` with the server extension and the prebuilt lab extension."""
    server = _started("lab", tmp_path_factory, server_group)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Return where screenshots go: $KERNEL_SENTINEL_SCREENSHOTS (docs/screenshots for the README) or a temp dir."""
    target = os.environ.get("KERNEL_SENTINEL_SCREENSHOTS")
    d = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


class NotebookPage:
    """A notebook opened in the browser, driven through the app object Lab exposes (expose_app_in_browser)."""

    def __init__(self, page, server: Server, path: str, ui: str = "lab") -> None:
        self.page, self.server = page, server
        self.console: list[str] = []  # the page's console, for the failure message
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.add_init_script(TOAST_WATCH)
        # ?reset: a fresh workspace, so Lab does not reopen (and start kernels for) earlier tests' notebooks.
        route = f"/lab/tree/{path}?reset&" if ui == "lab" else f"/notebooks/{path}?"
        page.goto(f"{server.url}{route}token={TOKEN}")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=90000)
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return k && k.status === 'idle' && k.connectionStatus === 'connected'; }",
            timeout=120000,
        )

    @property
    def kernel_id(self) -> str:
        return self.page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")

    def run(self, index: int) -> float:
        """Start cell ``index`` (not waiting for it) and return the page's clock (ms) at the request."""
        return self.page.evaluate(
            """(i) => { const p = window.jupyterapp.shell.currentWidget; p.content.activeCellIndex = i;
                 const t = Date.now(); void window.jupyterapp.commands.execute('notebook:run-cell'); return t; }""",
            index,
        )

    def outputs(self, index: int) -> str:
        return self.page.evaluate(
            """(i) => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[i].model.outputs.toJSON())""",
            index,
        )

    def run_and_wait(self, index: int, timeout: float = 120000) -> str:
        """Run cell ``index`` until its execution count is set and the kernel is idle; return its outputs (JSON)."""
        self.page.evaluate(
            "(i) => { const c = window.jupyterapp.shell.currentWidget.content.widgets[i]; c.model.executionCount = null; }",
            index,
        )
        self.run(index)
        self.page.wait_for_function(
            """(i) => { const p = window.jupyterapp.shell.currentWidget; const c = p.content.widgets[i];
                 return c.model.executionCount !== null && p.sessionContext.session.kernel.status === 'idle'; }""",
            arg=index, timeout=timeout,
        )
        return self.outputs(index)

    def toast(self, text: str):
        return self.page.locator(".Toastify__toast", has_text=text)

    def wait_toast(self, text: str, timeout: float = 60000):
        """Return the notification holding ``text`` once visible; on timeout, fail with what the page showed."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        toast = self.toast(text)
        try:
            toast.wait_for(state="visible", timeout=timeout)
        except PlaywrightTimeout:
            shown = self.page.evaluate("() => (window.__ksToasts || []).map(x => x.el.innerText)")
            pytest.fail(f"no notification with {text!r}; notifications: {shown}; console: {self.console[-15:]}")
        # Fully slid in (for the screenshot): its right edge inside the window.
        self.page.wait_for_function(
            """(s) => [...document.querySelectorAll('.Toastify__toast')].some(t => t.innerText.includes(s)
                 && t.getBoundingClientRect().right <= window.innerWidth)""", arg=text, timeout=timeout)
        return toast

    def toast_time(self, text: str) -> float:
        return self.page.evaluate(
            "(s) => { const t = window.__ksToasts.find(x => x.el.innerText.includes(s)); return t ? t.t : null; }", text
        )


def _death(server: Server, kernel_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        deaths = server.api(f"/api/kernel-sentinel/deaths?kernel_id={kernel_id}")
        if deaths:
            return deaths[0]
        assert time.monotonic() < deadline, f"no death recorded for {kernel_id}"
        time.sleep(0.3)


def test_lab_segfault_notification_details_and_restore(browser, lab: Server, shots: Path):
    """A segfaulting cell: the notification says why; Details explains; Restore variables brings them back."""
    name = _notebook(lab.root / "crash.ipynb", SENTINEL_KERNEL, [
        "answer = 41\nfruits = ['apple', 'pear']\nimport numpy as np\nmatrix = np.arange(12).reshape(3, 4)",
        "import ctypes\nctypes.string_at(0)",
        "print(answer + 1, fruits, int(matrix.sum()))",
    ])
    try:
        with _page(browser) as page:
            nb = NotebookPage(page, lab, name)
            kernel_id = nb.kernel_id
            assert "error" not in nb.run_and_wait(0)
            time.sleep(1.0)  # the checkpoint after cell [1] is written in the background; the restore reads it
            sent = nb.run(1)
            toast = nb.wait_toast("segmentation fault")
            shown = nb.toast_time("segmentation fault")
            death = _death(lab, kernel_id)
            assert death["cause"] == "segfault"
            latency = shown - death["died_at"] * 1000
            print(f"\nlab notification latency: {latency:.0f} ms from the death (died_at), "
                  f"{shown - sent:.0f} ms from the execute request")
            _record_latency("lab", latency, shown - sent)
            text = toast.inner_text()
            assert "SIGSEGV" in text and "[2]" in text, text
            page.screenshot(path=str(shots / "lab-1-death-notification.png"))

            # Lab's own causeless "Kernel Restarting ... appears to have died" dialog is closed by the extension.
            page.locator(".jp-Dialog", has_text="appears to have died").wait_for(state="detached", timeout=20000)
            toast.get_by_role("button", name="Details").click()
            dialog = page.locator(".jp-Dialog", has_text="Why the kernel")
            dialog.wait_for(state="visible")
            details = dialog.inner_text()
            assert "ctypes.string_at(0)" in details and "What to do" in details and "Evidence" in details, details
            page.screenshot(path=str(shots / "lab-2-details.png"))
            dialog.get_by_role("button", name="Close").click()
            dialog.wait_for(state="hidden")

            toast.get_by_role("button", name="Restore variables").click()
            restored = page.locator(".jp-Dialog", has_text="Restore")
            restored.wait_for(state="visible", timeout=90000)
            said = restored.inner_text()
            assert "Restored" in said, f"{said}\n{nb.console}" 
            assert "answer" in said and "fruits" in said and "matrix" in said, said
            # The same notification now says what came back.
            page.locator(".Toastify__toast", has_text="Variables back in the new kernel: answer, fruits, matrix").wait_for()
            page.screenshot(path=str(shots / "lab-3-variables-restored.png"))
            restored.get_by_role("button", name="Close").click()

            out = nb.run_and_wait(2)
            assert "42 ['apple', 'pear'] 66" in out, out
            page.screenshot(path=str(shots / "lab-4-variables-back.png"))
    finally:
        lab.shutdown_kernels()


def test_lab_stock_kernel_death_says_what_it_can(browser, lab: Server, shots: Path):
    """A stock ipykernel's death is still shown, with how to get the full explanation."""
    name = _notebook(lab.root / "stock.ipynb", "python3", ["import ctypes\nctypes.string_at(0)"])
    try:
        with _page(browser) as page:
            nb = NotebookPage(page, lab, name)
            # The status bar measures a stock kernel too: its memory against the server's 1 GiB group, no guard line.
            page.wait_for_function(
                "() => { const e = document.querySelector('.jp-KernelSentinel-memory');"
                " return e && e.dataset.level === 'ok' && e.textContent.includes('/ 1'); }",
                timeout=60000,
            )
            tooltip = page.locator(".jp-KernelSentinel-memory").get_attribute("title")
            assert "Stock kernel: no guard" in tooltip and "set by cgroup" in tooltip, tooltip
            assert "interrupts a cell" not in tooltip, tooltip
            nb.run(0)
            toast = nb.wait_toast("kernel-sentinel install")
            text = toast.inner_text()
            assert "SIGSEGV" in text or "segmentation" in text.lower(), text
            assert toast.get_by_role("button", name="Restore variables").count() == 0  # a stock kernel has no checkpoints
            page.screenshot(path=str(shots / "lab-5-stock-kernel.png"))
    finally:
        lab.shutdown_kernels()


def test_lab_death_shown_by_polling_when_events_do_not_arrive(browser, lab: Server):
    """Without the server's event stream the session's 'autorestarting' status makes the extension ask the REST API."""
    name = _notebook(lab.root / "noevents.ipynb", SENTINEL_KERNEL, ["import ctypes\nctypes.string_at(0)"])
    try:
        with _page(browser) as page:
            # The event socket answers nothing (never reaches the server): only the fallback can show the death.
            page.route_web_socket("**/api/events/subscribe**", lambda ws: None)
            nb = NotebookPage(page, lab, name)
            nb.run(0)
            nb.wait_toast("segmentation fault")
            assert any("shown (via poll)" in line for line in nb.console), nb.console[-10:]
    finally:
        lab.shutdown_kernels()


def test_lab_status_bar_turns_at_the_budget(browser, lab: Server, shots: Path):
    """The status bar shows memory against the real budget; amber near the interrupt line, red at it."""
    name = _notebook(lab.root / "memory.ipynb", SENTINEL_KERNEL, [
        "import numpy as np\nhold = np.ones(210 * 2**20 // 8)  # about 290 MiB in all: near the guard's interrupt line",
        "more = np.ones(512 * 2**20 // 8)  # over the budget: the guard raises MemoryBudgetError",
    ])
    try:
        with _page(browser) as page:
            nb = NotebookPage(page, lab, name)
            item = page.locator(".jp-KernelSentinel-memory")
            item.wait_for(state="visible", timeout=30000)
            # The kernel's real budget (its own 400 MiB group, not the server's 1 GiB one) and where it comes from.
            page.wait_for_function(
                "() => { const e = document.querySelector('.jp-KernelSentinel-memory');"
                " return e && e.dataset.level === 'ok' && e.textContent.includes('/ 400 MiB'); }",
                timeout=60000,
            )
            tooltip = item.get_attribute("title")
            assert "400 MiB budget (set by cgroup" in tooltip and "Guard: on" in tooltip, tooltip
            # The figure is the guard's own: the kernel's group's in-use memory, not the process's RSS.
            assert "Counted as the guard counts it: in use in this kernel's own memory group" in tooltip, tooltip
            page.screenshot(path=str(shots / "lab-6-status-ok.png"))

            out = nb.run_and_wait(0)
            assert "MemoryBudgetError" not in out, json.loads(out)[-1].get("evalue")
            page.wait_for_function(
                "() => document.querySelector('.jp-KernelSentinel-memory').dataset.level === 'amber'", timeout=30000
            )
            page.screenshot(path=str(shots / "lab-7-status-amber.png"))

            out = nb.run_and_wait(1)
            assert "MemoryBudgetError" in out, out
            page.wait_for_function(
                "() => document.querySelector('.jp-KernelSentinel-memory').dataset.level === 'red'", timeout=30000
            )
            page.screenshot(path=str(shots / "lab-8-status-red.png"))
            # A MemoryBudgetError stays in its cell, as the kernel's own output: no notification for it.
            assert page.evaluate("() => window.__ksToasts.length") == 0
            assert nb.page.evaluate(
                "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status") == "idle"
    finally:
        lab.shutdown_kernels()


def test_notebook7_segfault_notification(browser, memory_cgroup, tmp_path_factory, shots: Path):
    """The same notification in Notebook 7 (no status bar there)."""
    server = _started("notebook", tmp_path_factory, memory_cgroup(GiB))
    try:
        with _page(browser) as page:
            name = _notebook(server.root / "crash7.ipynb", SENTINEL_KERNEL, ["x = 1", "import ctypes\nctypes.string_at(0)"])
            nb = NotebookPage(page, server, name, ui="notebook")
            kernel_id = nb.kernel_id
            nb.run_and_wait(0)
            sent = nb.run(1)
            toast = nb.wait_toast("segmentation fault")
            shown = nb.toast_time("segmentation fault")
            death = _death(server, kernel_id)
            _record_latency("notebook7", shown - death["died_at"] * 1000, shown - sent)
            assert toast.get_by_role("button", name="Details").count() == 1
            page.screenshot(path=str(shots / "notebook7-death-notification.png"))
    finally:
        server.stop()


def test_lab_without_the_server_extension_says_so_once(browser, memory_cgroup, tmp_path_factory, shots: Path):
    """No server extension: one warning, a quiet status bar item, and the notebook works as before."""
    server = _started("lab", tmp_path_factory, memory_cgroup(GiB), server_extension=False)
    try:
        with _page(browser) as page:
            name = _notebook(server.root / "plain.ipynb", "python3", ["6 * 7", "print('still works')"])
            nb = NotebookPage(page, server, name)
            assert "42" in nb.run_and_wait(0)
            nb.wait_toast("server extension is not running")
            page.wait_for_function(
                "() => { const e = document.querySelector('.jp-KernelSentinel-memory'); return e && e.dataset.level === 'off'; }",
                timeout=30000,
            )
            assert "still works" in nb.run_and_wait(1)
            said = page.evaluate(
                "() => window.__ksToasts.filter(x => x.el.innerText.includes('server extension is not running')).length")
            assert said == 1
            page.screenshot(path=str(shots / "lab-9-no-server-extension.png"))
    finally:
        server.stop()


def test_lab_with_the_store_unreachable_says_so_once(browser, lab: Server, shots: Path):
    """The server extension runs but its store cannot be read (503): one warning, the notebook works as before,
    and a death is still shown with its cause (the event does not need the store)."""
    store = lab.home / "store.db"
    kept = store.with_name("store.db.kept")
    if store.exists():
        store.rename(kept)
    store.mkdir()  # a folder where the store should be: nothing can open it (as in test_server_extension)
    name = _notebook(lab.root / "nostore.ipynb", SENTINEL_KERNEL,
                     ["6 * 7", "print('still works')", "import ctypes\nctypes.string_at(0)"])
    try:
        status = urllib.request.Request(f"{lab.url}/api/kernel-sentinel/deaths",
                                        headers={"Authorization": f"token {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(status, timeout=10)
        assert refused.value.code == 503  # control: the store really is unreachable for the server
        with _page(browser) as page:
            nb = NotebookPage(page, lab, name)
            assert "42" in nb.run_and_wait(0)
            nb.wait_toast("store or the autopsy cannot be read (503)")
            assert "still works" in nb.run_and_wait(1)
            # The status bar still reads the kernel's memory (it does not need the store).
            page.wait_for_function(
                "() => { const e = document.querySelector('.jp-KernelSentinel-memory');"
                " return e && e.dataset.level === 'ok' && e.textContent.includes('/ 400 MiB'); }",
                timeout=60000,
            )
            page.screenshot(path=str(shots / "lab-10-store-unreachable.png"))
            nb.run(2)
            nb.wait_toast("segmentation fault")
            said = page.evaluate(
                "() => window.__ksToasts.filter(x => x.el.innerText.includes('cannot be read (503)')).length")
            assert said == 1, nb.console[-10:]
    finally:
        lab.shutdown_kernels()
        store.rmdir()
        if kept.exists():
            kept.rename(store)


def _record_latency(ui: str, from_death_ms: float, from_execute_ms: float) -> None:
    """Append the figure to $KERNEL_SENTINEL_LAB_LATENCY (JSON lines) when set; printed either way."""
    print(f"\n{ui}: death -> notification {from_death_ms:.0f} ms; execute -> notification {from_execute_ms:.0f} ms")
    target = os.environ.get("KERNEL_SENTINEL_LAB_LATENCY")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps({"ui": ui, "death_to_notification_ms": round(from_death_ms),
                                "execute_to_notification_ms": round(from_execute_ms)}) + "\n")
