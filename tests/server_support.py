"""A real ``jupyter server`` for tests: localhost, random port, a token, its own folders, our kernelspecs.

``JupyterServer(tmp_path, cgroup=...).start()`` runs ``python -m jupyter_server`` as a subprocess with its own
JUPYTER_CONFIG_DIR / JUPYTER_DATA_DIR / JUPYTER_RUNTIME_DIR / KERNEL_SENTINEL_HOME, and JUPYTER_PATH holding
two kernelspecs: ``python3-sentinel`` (the sentinel launcher) and ``python3-stock`` (plain ipykernel). The
kernel_sentinel server extension is NOT enabled on the command line: it must come from the package's
``jupyter_server_config.d`` file, as for a user. With ``cgroup=`` the server (and so every kernel it starts)
runs inside that memory cgroup. ``stop()`` shuts the kernels and the server down.

Used by tests/test_server_*.py and by the lab stream's browser tests (``app="jupyterlab"`` starts
``jupyter lab`` the same way).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kernel_sentinel.kernelspec import kernelspec_dict

SENTINEL = "python3-sentinel"
STOCK = "python3-stock"
DEATH_SCHEMA = "https://events.kernel-sentinel.dev/kernel_death"


def extension_installed() -> bool:
    """Return True when a jupyter_server_config.d file on Jupyter's config path enables the extension."""
    from jupyter_core.paths import jupyter_config_path

    for folder in jupyter_config_path():
        path = Path(folder, "jupyter_server_config.d", "kernel_sentinel.json")
        try:
            if json.loads(path.read_text())["ServerApp"]["jpserver_extensions"]["kernel_sentinel.server"]:
                return True
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_kernelspecs(data_dir: Path, sentinel_env: dict[str, str] | None = None) -> None:
    """Write the sentinel and the stock kernelspec under ``data_dir/kernels``."""
    sentinel = kernelspec_dict("Python 3 (sentinel)")
    if sentinel_env:
        sentinel["env"] = {**sentinel.get("env", {}), **sentinel_env}
    stock = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (stock)",
        "language": "python",
    }
    for name, spec in ((SENTINEL, sentinel), (STOCK, stock)):
        folder = data_dir / "kernels" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kernel.json").write_text(json.dumps(spec))


class JupyterServer:
    """One real Jupyter server process (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        cgroup: Any = None,
        app: str = "jupyter_server",
        env: dict[str, str] | None = None,
        sentinel_env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.cgroup = cgroup
        self.app = app
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = self.root / "ks-home"
        self.runtime = self.root / "runtime"
        self.notebooks = self.root / "notebooks"
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.extra_env = env or {}
        self.sentinel_env = sentinel_env
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> JupyterServer:
        if not extension_installed():
            raise RuntimeError(
                "kernel_sentinel.server is not enabled in this environment: `make server-extension` (part of "
                "`make test`) installs its jupyter_server_config.d file, which `pip install -e` leaves out"
            )
        for d in (self.home, self.runtime, self.notebooks, self.data, self.root / "config", self.root / "user-data"):
            d.mkdir(parents=True, exist_ok=True)
        install_kernelspecs(self.data, self.sentinel_env)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.root / "config"),
            "JUPYTER_DATA_DIR": str(self.root / "user-data"),
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTER_PATH": str(self.data),
            "KERNEL_SENTINEL_HOME": str(self.home),
            **self.extra_env,
        }
        env.pop("JUPYTER_CONFIG_PATH", None)
        argv = [
            sys.executable,
            "-m",
            self.app,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.notebooks}",
            "--ServerApp.allow_root=True",
            f"--KernelSpecManager.allowed_kernelspecs={SENTINEL}",
            f"--KernelSpecManager.allowed_kernelspecs={STOCK}",
            f"--MappingKernelManager.default_kernel_name={SENTINEL}",
            *self.args,
        ]
        if self.cgroup is not None:
            from kernel_sentinel.confine import confined_command

            argv = confined_command(argv, cgroup=self.cgroup)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if self.request("GET", "/api/status")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter server did not answer in {timeout:.0f} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Shut the kernels and the server down: kernels through the API, the server by SIGTERM (then SIGKILL),
        and any process it started that outlived it by SIGKILL (kernels run in sessions of their own)."""
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for kernel in self.request("GET", "/api/kernels")[1] or []:
                self.request("DELETE", f"/api/kernels/{kernel['id']}")
        except Exception:
            pass
        try:
            started = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            started = []
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)  # the session start_new_session made: the server and its kernels
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        for child in started:
            try:
                child.kill()  # psutil checks the pid still names the same process before signalling
            except psutil.Error:
                pass

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- HTTP ------------------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None | bool = True, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """Return (status, parsed JSON body or text) of one request; ``token=False`` sends none."""
        headers = {"Content-Type": "application/json"}
        if token is True:
            headers["Authorization"] = f"token {self.token}"
        elif token:
            headers["Authorization"] = f"token {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def get(self, path: str, **kw: Any) -> Any:
        """Return the JSON of a GET that must succeed."""
        status, body = self.request("GET", path, **kw)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body}")
        return body

    def start_kernel(self, name: str = SENTINEL) -> str:
        status, body = self.request("POST", "/api/kernels", {"name": name})
        if status not in (200, 201):
            raise AssertionError(f"starting kernel {name} -> {status}: {body}")
        return str(body["id"])

    def start_session(self, path: str, name: str = SENTINEL) -> str:
        """Start a kernel for notebook ``path`` as JupyterLab does (a session); return the kernel's id."""
        body = {"path": path, "name": path.rsplit("/", 1)[-1], "type": "notebook", "kernel": {"name": name}}
        status, reply = self.request("POST", "/api/sessions", body)
        if status not in (200, 201):
            raise AssertionError(f"starting a session for {path} -> {status}: {reply}")
        return str(reply["kernel"]["id"])

    def connection_file(self, kernel_id: str) -> Path:
        return self.runtime / f"kernel-{kernel_id}.json"

    def client(self, kernel_id: str, timeout: float = 60.0) -> Any:
        """Return a started, ready ``BlockingKernelClient`` on the kernel's connection file."""
        from jupyter_client import BlockingKernelClient

        kc = BlockingKernelClient(connection_file=str(self.connection_file(kernel_id)))
        kc.load_connection_file()
        # No heartbeat channel: without a kernel manager the client judges "alive" by heartbeats, which a
        # kernel still starting has not answered yet; the server, which owns the kernel, watches it instead.
        kc.start_channels(hb=False)
        kc.wait_for_ready(timeout=timeout)
        return kc

    def kernel_pids(self, kernel_id: str) -> list[int]:
        """Return the pids of this server's processes running kernel ``kernel_id`` (launcher first)."""
        import psutil

        assert self.proc is not None
        marker = f"kernel-{kernel_id}.json"
        out = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if any(marker in part for part in p.cmdline()):
                    out.append(p.pid)
            except psutil.Error:
                continue
        return out

    def wait_for(self, what: str, fn: Any, timeout: float = 60.0, every: float = 0.25) -> Any:
        """Return ``fn()``'s first truthy value; fail with ``what`` and the server log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; server log:\n{self.log_text()[-4000:]}")
            time.sleep(every)

    def deaths(self, kernel_id: str | None = None) -> list[dict[str, Any]]:
        query = f"?kernel_id={kernel_id}" if kernel_id else ""
        return list(self.get(f"/api/kernel-sentinel/deaths{query}"))

    def metrics(self) -> str:
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics -> {status}")
        return str(body)

    def events(self) -> EventReader:
        """Return a reader subscribed to the server's event stream (``/api/events/subscribe``)."""
        return EventReader(self.url.replace("http", "ws", 1) + "/api/events/subscribe", self.token)


class EventReader:
    """Collects the events a server streams on its websocket, in a background thread."""

    def __init__(self, url: str, token: str) -> None:
        import websocket

        self.events: list[dict[str, Any]] = []
        self._ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=30)
        self._ws.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import websocket

        while not self._stop.is_set():
            try:
                raw = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                return
            try:
                self.events.append(json.loads(raw))
            except ValueError:
                continue

    def of(self, schema: str = DEATH_SCHEMA) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("schema_id") == schema]

    def close(self) -> None:
        self._stop.set()
        try:
            self._ws.close()
        except Exception:
            pass
        self._thread.join(5)
