"""A real JupyterHub on localhost: each user's server in its own 512 MiB memory cgroup, sentinel kernels as
the default ``python3``, deaths in a real PostgreSQL (one role per user), the admin's view in
``kernel-sentinel fleet`` and on a hub service page behind the hub's login, and a real Prometheus scraping the
users' servers' ``/metrics``.

Needs ``make services`` (configurable-http-proxy from npm into .services/, Debian's postgresql and
prometheus); skips, saying which, where one is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from fleet_support import postgres, wait_for  # noqa: F401 - the fixture

from kernel_sentinel.confine import ConfineError, MemoryCgroup
from kernel_sentinel.fleet import roles
from kernel_sentinel.memory import locate_cgroup
from kernel_sentinel.store import SharedStore

pytestmark = pytest.mark.cgroup

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHP = ROOT / ".services" / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = "hub-test-password"
# Grows until the OOM killer ends the kernel (16 MiB of touched bytes at a time): run only in a memory group
# of at most 1 GiB (the user's server's 512 MiB on the hub; the control's 512 MiB group below).
KILLER = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))  # keep everything\n"


def _port() -> int:
    return _ports(1)[0]


def _ports(n: int) -> list[int]:
    """Return ``n`` distinct free ports (held open together, so no two are the same)."""
    held = [socket.socket() for _ in range(n)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _need_tools() -> None:
    if not CHP.exists() and not shutil.which("configurable-http-proxy"):
        pytest.skip("configurable-http-proxy is not installed: run `make services` (npm)")
    if not shutil.which("prometheus"):
        pytest.skip("prometheus is not installed: run `make services` (Debian's prometheus)")
    try:
        MemoryCgroup.create(64 << 20, prefix="ks-hub-probe").remove()
    except ConfineError as exc:
        pytest.skip(f"no memory cgroup can be made here: {exc}")


HUB_CONFIG = """
import sys
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = "{tmp}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "{password}"
c.Authenticator.admin_users = {{"admin"}}
c.Authenticator.allowed_users = {{"alice", "bob", "admin"}}
c.JupyterHub.spawner_class = "kernel_sentinel.fleet.spawner.CgroupSpawner"
c.Spawner.mem_limit = "512M"
c.Spawner.cmd = ["{bin}/jupyterhub-singleuser"]
c.Spawner.args = ["--allow-root", "--ServerApp.authenticate_prometheus=True"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/homes/{{username}}"
urls = {urls!r}
c.Spawner.environment = {{
    "JUPYTER_PATH": "{prefix}/share/jupyter",
    "KERNEL_SENTINEL_HOME": lambda spawner: "{tmp}/homes/" + spawner.user.name + "/.kernel-sentinel",
    "KERNEL_SENTINEL_DATABASE_URL": lambda spawner: urls.get(spawner.user.name, ""),
    "KERNEL_SENTINEL_CHECKPOINT": "0",
}}
c.JupyterHub.services = [
    {{
        "name": "kernel-sentinel",
        "url": "http://127.0.0.1:{service_port}",
        "command": [sys.executable, "-m", "kernel_sentinel.fleet.hub_service"],
        "environment": {{"KERNEL_SENTINEL_DATABASE_URL": "{admin_url}", "KERNEL_SENTINEL_FLEET_ADMINS": "admin"}},
        "oauth_no_confirm": True,
    }},
    {{"name": "prometheus", "api_token": "{prometheus_token}"}},
    {{"name": "tester", "api_token": "{tester_token}"}},
]
c.JupyterHub.load_roles = [
    {{"name": "scraper", "scopes": ["access:servers"], "services": ["prometheus"]}},
    {{"name": "tester", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["tester"]}},
]
"""


class Hub:
    """The hub process this test started, and a client of its REST API with the tester's token."""

    def __init__(self, tmp: Path, pg, urls: dict[str, str]) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True)
        self.port, hub_port, proxy_api_port, service_port = _ports(4)
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.prometheus_token = secrets.token_hex(16)
        prefix = tmp / "prefix"
        install = subprocess.run([str(BIN / "kernel-sentinel"), "install", "--replace", "--prefix", str(prefix)],
                                 capture_output=True, text=True)
        assert install.returncode == 0, install.stderr
        (tmp / "homes" / "alice" / "course").mkdir(parents=True)  # the notebook's folder: the kernel's cwd
        config = tmp / "jupyterhub_config.py"
        config.write_text(HUB_CONFIG.format(
            port=self.port, hub_port=hub_port, proxy_api_port=proxy_api_port, service_port=service_port, tmp=tmp,
            chp=CHP if CHP.exists() else shutil.which("configurable-http-proxy"), password=PASSWORD, bin=BIN,
            prefix=prefix, urls=urls, admin_url=pg.admin_url, prometheus_token=self.prometheus_token,
            tester_token=self.token,
        ))
        env = {**os.environ, "PATH": f"{BIN}:{CHP.parent}:{os.environ['PATH']}"}
        env.pop("KERNEL_SENTINEL_DATABASE_URL", None)
        self.log = open(tmp / "hub.log", "w")
        self.proc = subprocess.Popen([str(BIN / "jupyterhub"), "-f", str(config)], cwd=tmp, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            up = wait_for(lambda: self._up(), timeout=120, step=0.5)
            assert up, f"the hub did not come up: {self.tail()}"
        except BaseException:
            self.close()  # its proxy too
            raise

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the hub exited: {self.tail()}")
        try:
            return requests.get(f"{self.base}/hub/api/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def tail(self) -> str:
        self.log.flush()
        return (self.tmp / "hub.log").read_text()[-4000:]

    def tail_all(self) -> str:
        self.log.flush()
        return (self.tmp / "hub.log").read_text()

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.base}{path}", headers={"Authorization": f"token {self.token}"},
                                timeout=60, **kwargs)

    def start_server(self, user: str) -> None:
        self.api("POST", "/hub/api/users", json={"usernames": [user]})
        r = self.api("POST", f"/hub/api/users/{user}/server")
        assert r.status_code in (201, 202), r.text
        ready = wait_for(lambda: self.api("GET", f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"),
                         timeout=180, step=0.5)
        assert ready, f"{user}'s server did not become ready: {self.tail()}"

    def login(self, user: str) -> requests.Session:
        """Return a browser-like session logged in to the hub as ``user`` (the login form, with its xsrf)."""
        s = requests.Session()
        s.get(f"{self.base}/hub/login", timeout=30)
        r = s.post(f"{self.base}/hub/login?next=", data={"username": user, "password": PASSWORD,
                                                        "_xsrf": s.cookies.get("_xsrf")}, timeout=60)
        assert r.status_code == 200 and "jupyterhub-session-id" in s.cookies, r.status_code
        return s

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # the hub stops every server (their groups go with them)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        try:  # a hub that failed to start leaves its proxy behind, in the session this test started
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.log.close()


async def _execute(base: str, token: str, kernel_id: str, code: str) -> None:
    """Send one execute_request to a kernel over the server's websocket; return once it was sent."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    await conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the kernel took the cell (busy), or the socket closed
        try:
            message = await asyncio.wait_for(conn.read_message(), timeout=5)
        except asyncio.TimeoutError:
            continue
        if message is None:
            return
        data = json.loads(message)
        if data.get("msg_type") == "status" and data["content"].get("execution_state") == "busy" and \
                data.get("parent_header", {}).get("msg_id") == msg_id:
            await asyncio.sleep(1)
            conn.close()
            return


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 2s
scrape_configs:
{jobs}
"""
JOB = """  - job_name: "{user}"
    metrics_path: "/user/{user}/metrics"
    authorization:
      type: token
      credentials: "{token}"
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def test_a_hub_users_kernel_death_reaches_the_admin(postgres, tmp_path):
    _need_tools()
    roles.setup(postgres.admin_url)
    urls = {}
    for user in ("alice", "bob"):
        password = secrets.token_hex(8)
        roles.add_user(postgres.admin_url, user, password)
        urls[user] = postgres.url(user, password)
    try:
        hub = Hub(tmp_path / "hub", postgres, urls)
    except AssertionError as exc:
        if "Address already in use" not in str(exc):
            raise
        hub = Hub(tmp_path / "hub-again", postgres, urls)  # a port was taken meanwhile by another process
    prometheus = None
    try:
        hub.start_server("alice")
        hub.start_server("bob")
        alice = f"{hub.base}/user/alice"
        # the server runs in its own 512 MiB memory group, and the default python3 is the sentinel kernel
        groups = _user_groups("alice")
        assert len(groups) == 1 and groups[0].limit_bytes() == 512 * 2**20
        assert any(b"jupyterhub-singleuser" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in groups[0].pids())
        spec = hub.api("GET", "/user/alice/api/kernelspecs").json()
        assert spec["default"] == "python3"
        assert "kernel_sentinel.launch" in " ".join(spec["kernelspecs"]["python3"]["spec"]["argv"])
        session = hub.api("POST", "/user/alice/api/sessions", json={
            "path": "course/week1.ipynb", "type": "notebook", "name": "week1.ipynb", "kernel": {"name": "python3"}})
        assert session.status_code == 201, session.text
        kernel_id = session.json()["kernel"]["id"]
        asyncio.run(_execute(alice, hub.token, kernel_id, "import ctypes\nctypes.string_at(0)  # crash the kernel"))

        def alice_death():
            with SharedStore(postgres.admin_url) as shared:
                return shared.rows("SELECT * FROM deaths WHERE kernel_id = ?", (kernel_id,))

        # bob's kernel dies of memory: the guard switched off in the cell (as a user may), the cell grows until
        # the OOM killer of his server's 512 MiB group ends the kernel, not the server beside it
        bob_session = hub.api("POST", "/user/bob/api/sessions", json={
            "path": "oom.ipynb", "type": "notebook", "name": "oom.ipynb", "kernel": {"name": "python3"}})
        assert bob_session.status_code == 201, bob_session.text
        bob_kernel = bob_session.json()["kernel"]["id"]
        (bob_group,) = _user_groups("bob")
        oom_before = bob_group.oom_kills()
        asyncio.run(_execute(f"{hub.base}/user/bob", hub.token, bob_kernel, "%sentinel off\n" + KILLER))

        rows = wait_for(alice_death, timeout=120, step=1)
        assert rows, f"alice's kernel death did not reach PostgreSQL: {hub.tail()}"
        assert rows[0]["cause"] == "segfault" and rows[0]["username"] == "alice"
        assert rows[0]["notebook"] == "course/week1.ipynb" and "/user/alice/" in rows[0]["server"]
        assert "ctypes.string_at(0)" in rows[0]["cell_code"]
        with SharedStore(urls["bob"]) as shared:  # bob's role does not see alice's rows
            assert not shared.rows("SELECT 1 FROM deaths WHERE kernel_id = ?", (kernel_id,))

        def bob_death():
            with SharedStore(urls["bob"]) as shared:  # written, and read back, under bob's own role
                return shared.rows("SELECT * FROM deaths WHERE kernel_id = ?", (bob_kernel,))

        oom_rows = wait_for(bob_death, timeout=120, step=1)
        assert oom_rows, f"bob's OOM death did not reach PostgreSQL: {hub.tail()}"
        assert oom_rows[0]["cause"] == "oom_kill" and oom_rows[0]["memory_exhausted"] == 1
        assert oom_rows[0]["username"] == "bob" and oom_rows[0]["notebook"] == "oom.ipynb"
        assert oom_rows[0]["kernel_name"] == "python3" and oom_rows[0]["host"] == socket.gethostname()
        assert "/user/bob/" in oom_rows[0]["server"]
        assert "chunks.append" in oom_rows[0]["cell_code"]
        assert json.loads(oom_rows[0]["report"])["scope"] == "cgroup"
        assert bob_group.oom_kills() > oom_before  # the OOM killer of bob's server's group, not a signal we sent
        assert hub.api("GET", "/hub/api/users/bob").json()["servers"][""]["ready"]  # the server lived on

        # the admin: the CLI over the shared database
        fleet = subprocess.run([str(BIN / "kernel-sentinel"), "fleet", "--json", "--by", "user"], capture_output=True,
                               text=True, env={**os.environ, "KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url})
        assert fleet.returncode == 0, fleet.stderr
        assert json.loads(fleet.stdout)["deaths"]["by"].get("alice", 0) >= 1
        by_cause = subprocess.run([str(BIN / "kernel-sentinel"), "fleet", "--json"], capture_output=True, text=True,
                                  env={**os.environ, "KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url})
        assert by_cause.returncode == 0, by_cause.stderr
        causes = json.loads(by_cause.stdout)["deaths"]["by"]
        assert causes.get("oom_kill", 0) >= 1 and causes.get("segfault", 0) >= 1, causes

        # the admin: the hub service page, behind the hub's login; bob is not an admin; nobody logged in: login
        page = f"{hub.base}/services/kernel-sentinel/"
        admin = hub.login("admin")
        r = admin.get(page + "?format=json&by=user", timeout=60)
        assert r.status_code == 200, r.text[:500]
        assert r.json()["deaths"]["by"].get("alice", 0) >= 1
        html = admin.get(page, timeout=60).text
        assert "<svg" in html and "ctypes.string_at(0)" in html
        assert hub.login("bob").get(page, timeout=60).status_code == 403
        anonymous = requests.get(page, timeout=60)
        assert "/hub/login" in anonymous.url

        # Prometheus scrapes both servers' /metrics with a hub token and has alice's death
        prom_port = _port()
        (tmp_path / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(jobs="".join(
            JOB.format(user=u, token=hub.prometheus_token, port=hub.port) for u in ("alice", "bob"))))
        prom_log = open(tmp_path / "prometheus.log", "w")
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=prom_log, stderr=subprocess.STDOUT)

        def deaths_in_prometheus(job: str = "alice"):
            try:
                r = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/query",
                                 params={"query": f'kernel_sentinel_deaths_total{{job="{job}"}}'}, timeout=10)
                return [x for x in r.json()["data"]["result"] if float(x["value"][1]) >= 1]
            except (requests.RequestException, ValueError, KeyError):
                return None

        found = wait_for(deaths_in_prometheus, timeout=90, step=1)
        assert found, (tmp_path / "prometheus.log").read_text()[-3000:]
        assert found[0]["metric"]["cause"] == "segfault"
        found = wait_for(lambda: deaths_in_prometheus("bob"), timeout=90, step=1)
        assert found, (tmp_path / "prometheus.log").read_text()[-3000:]
        assert [x["metric"]["cause"] for x in found] == ["oom_kill"]
        def health():
            targets = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=10).json()
            return {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}

        assert wait_for(lambda: health() == {"alice": "up", "bob": "up"}, timeout=60), health()
        # each user's server runs the pooled forwarding thread (the supervisors' own forwarders are the backup)
        assert hub.tail_all().count("kernel-sentinel: forwarding records to the shared database") >= 2
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        hub.close()
    assert _user_groups("alice") == [] and _user_groups("bob") == []  # removed with the servers


def _user_groups(user: str) -> list[MemoryCgroup]:
    """Return the memory groups the spawner made for ``user``'s server (children of this process's group)."""
    location, _ = locate_cgroup()
    parent = location.leaf
    return [MemoryCgroup(os.path.join(parent.directory, name), location.version, f"{parent.path}/{name}")
            for name in sorted(os.listdir(parent.directory)) if name.startswith(f"hub-{user}-")]


@pytest.mark.cgroup
def test_the_hub_killer_kills_a_stock_kernel_in_the_same_size_of_group(kernel):
    """The control of the hub's OOM death: the same cell in a stock ipykernel in a 512 MiB group (the hub's
    mem_limit) is ended by the OOM killer too, so the hub test's death is the cell's, not the sentinel's."""
    k = kernel(limit_bytes=512 * 2**20)
    assert k.run(KILLER).status == "died"
    assert k.oom_kills() >= 1 and k.exit_status == -signal.SIGKILL
