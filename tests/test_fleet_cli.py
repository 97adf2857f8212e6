"""``kernel-sentinel fleet`` over a real SQLite store and a real PostgreSQL: grouping, copies of a cell folded
together, memory errors from a real guarded kernel, the JSON contract, the self-contained HTML page."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest
from conftest import GiB, MiB
from fleet_support import postgres, wait_for  # noqa: F401 - the fixture

from kernel_sentinel.fleet.query import fleet_summary
from kernel_sentinel.store import SharedStore, Store

NOW = time.time()
COURSE_CELL = "import pandas as pd\ndf = pd.read_csv('big.csv')  # week 1\n"
COURSE_COPY = "import pandas as pd\n\n# my copy\ndf = pd.read_csv( 'big.csv' )\n"  # same cell, edited spacing
OTHER_CELL = "import numpy as np\nx = np.ones((50000, 50000))"


def _add(store: Store, i: int, user: str, cause: str, code: str, days_ago: float = 0.5,
         notebook: str = "week1.ipynb", tag: str = "") -> None:
    report = {"kernel_id": f"{tag}{user}-{i}", "cause": cause, "summary": f"{cause} {i}", "user": user,
              "host": f"node-{i % 2}", "notebook": notebook, "kernel_name": "python3",
              "memory_exhausted": cause == "oom_kill", "cell": {"execution_count": 4, "code": code}}
    store.add_death(report, {"pid": 100 + i}, died_at=NOW - days_ago * 86400)


def _seed(store_path, url: str | None = None, tag: str = "") -> None:
    env = {"KERNEL_SENTINEL_DATABASE_URL": url} if url else {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with Store(store_path) as store:
            for i in range(6):
                _add(store, i, "alice" if i < 4 else "bob", "oom_kill", COURSE_CELL if i % 2 else COURSE_COPY, tag=tag)
            _add(store, 6, "bob", "segfault", OTHER_CELL, notebook="lab2.ipynb", tag=tag)
            _add(store, 7, "carol", "oom_kill", OTHER_CELL, days_ago=30, tag=tag)  # outside 7d
            for i in range(3):
                store.add_memory_error({"kernel_id": f"me-{i}", "user": "carol", "code": COURSE_CELL,
                                        "notebook": "week1.ipynb", "requested_bytes": 4 * GiB, "at": NOW - 3600})
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_sentinel", "fleet", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _check_summary(data: dict) -> None:
    assert data["since"] == "7d"
    assert data["deaths"] == {"total": 7, "by": {"oom_kill": 6, "segfault": 1}}
    assert data["memory_errors"] == {"total": 3, "by": {"memory_budget": 3}}
    top = data["top_cells"][0]
    assert (top["deaths"], top["memory_errors"]) == (6, 3)  # six copies of the course cell and its three refusals
    assert "read_csv" in top["code"]
    assert data["top_cells"][1]["deaths"] == 1 and "np.ones" in data["top_cells"][1]["code"]


def test_fleet_on_the_local_store(tmp_path, monkeypatch):
    monkeypatch.delenv("KERNEL_SENTINEL_DATABASE_URL", raising=False)
    _seed(tmp_path / "store.db")
    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(tmp_path))
    proc = _cli("--json")
    assert proc.returncode == 0, proc.stderr
    _check_summary(json.loads(proc.stdout))
    by_user = json.loads(_cli("--json", "--by", "user").stdout)
    assert by_user["deaths"]["by"] == {"alice": 4, "bob": 3} and by_user["memory_errors"]["by"] == {"carol": 3}
    assert json.loads(_cli("--json", "--by", "library").stdout)["deaths"]["by"] == {"pandas": 6, "numpy": 1}
    assert json.loads(_cli("--json", "--by", "notebook").stdout)["deaths"]["by"] == {"week1.ipynb": 6, "lab2.ipynb": 1}
    assert json.loads(_cli("--json", "--by", "host").stdout)["deaths"]["total"] == 7
    assert json.loads(_cli("--json", "--since", "60d").stdout)["deaths"]["total"] == 8
    terminal = _cli()
    assert terminal.returncode == 0 and "7 kernel deaths" in terminal.stdout and "read_csv" in terminal.stdout


def test_html_page_is_self_contained(tmp_path, monkeypatch):
    monkeypatch.delenv("KERNEL_SENTINEL_DATABASE_URL", raising=False)
    _seed(tmp_path / "store.db")
    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(tmp_path))
    page = tmp_path / "fleet.html"
    proc = _cli("--html", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert "<svg" in text and text.count('class="bar"') == 2  # one day: an oom_kill bar and a segfault bar
    assert "<script" not in text and not re.search(r"(src|href)=\"https?:", text)
    assert "read_csv" in text and "&#x27;big.csv&#x27;" in text  # code escaped, not injected


def test_html_page_lists_the_records_the_database_refused(postgres, tmp_path, monkeypatch):
    """The page names the records the shared database refused, as --json and the one line do: each server's (user,
    host, store, reason) on the admin's page and the server's own, its outbox's when fleet read the local store;
    every name and reason escaped (this store's path has markup in it)."""
    import fcntl
    import html
    import socket

    from kernel_sentinel.fleet import roles

    monkeypatch.delenv("KERNEL_SENTINEL_DATABASE_URL", raising=False)
    roles.setup(postgres.admin_url)
    roles.add_user(postgres.admin_url, "gina", "pw-gina")
    gina = postgres.url("gina", "pw-gina")
    home = tmp_path / "gina<i>"
    home.mkdir()
    # Held, the "a forwarder waits to run" lock keeps closing the store from starting a detached forwarder, which
    # could report this store's refusal to the shared database after this test removed that report.
    pending = os.open(home / "forward.pending", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(pending, fcntl.LOCK_EX)
    try:
        monkeypatch.setenv("KERNEL_SENTINEL_DATABASE_URL", gina)
        with Store(home / "store.db") as store:
            _add(store, 1, "alice", "oom_kill", OTHER_CELL, tag="page-")  # not gina's name: the database refuses it
        monkeypatch.delenv("KERNEL_SENTINEL_DATABASE_URL")
        admin = {"KERNEL_SENTINEL_HOME": str(tmp_path / "admin"), "KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url}
        pages = {}
        for who, env in (("gina", {"KERNEL_SENTINEL_HOME": str(home), "KERNEL_SENTINEL_DATABASE_URL": gina}),
                         ("admin", admin)):
            page = tmp_path / f"{who}.html"
            proc = _cli("--html", str(page), env=env)  # gina's fleet forwards first: the refusal is reported
            assert proc.returncode == 0 and "1 record refused by the shared database on 1 server (gina@" in proc.stderr, \
                proc.stderr
            pages[who] = page.read_text()
        reason = json.loads(_cli("--json", env=admin).stdout)["refused"]["servers"][0]["reason"]
        assert "row-level security" in reason and '"' in reason  # PostgreSQL quotes the table's name
        for who, text in pages.items():
            assert "<h2>Records the shared database refused</h2>" in text, who
            assert "<b>1</b> record refused by the shared database on 1 server, kept in their servers' outboxes" in text
            row = (f"<tr><td>gina</td><td>{html.escape(socket.gethostname())}</td>"
                   f"<td>{html.escape(str(home / 'store.db'))}</td><td class=n>1</td>")
            assert row in text and html.escape(reason) in text and reason not in text, who
            assert "gina<i>" not in text and "gina&lt;i&gt;" in text, who
        # fleet without the database reads this server's store: its outbox names the refused record
        page = tmp_path / "local.html"
        proc = _cli("--html", str(page), env={"KERNEL_SENTINEL_HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        text = page.read_text()
        assert "<b>1</b> record refused by the shared database, kept in this server's outbox" in text
        assert "<tr><td colspan=3>this server</td><td class=n>1</td>" in text and html.escape(reason) in text
    finally:
        os.close(pending)
        import psycopg

        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:  # the later tests' admin views count
            conn.execute("DELETE FROM outbox_status WHERE store = %s", (str(home / "store.db"),))  # every refusal
    with SharedStore(postgres.admin_url) as shared:
        assert not shared.rows("SELECT 1 FROM deaths WHERE kernel_id = 'page-alice-1'")


def test_bad_arguments_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_SENTINEL_HOME", str(tmp_path))
    proc = _cli("--since", "yesterday")
    assert proc.returncode == 64 and proc.stderr.count("\n") == 1 and "--since" in proc.stderr
    assert _cli("--by", "colour").returncode == 64
    proc = _cli("--json", env={"KERNEL_SENTINEL_DATABASE_URL": "postgresql://nobody@/x?host=/nonexistent"})
    assert proc.returncode == 1 and "cannot reach the database" in proc.stderr and "Traceback" not in proc.stderr


def test_fleet_on_postgresql_reads_every_server(postgres, tmp_path):
    for server in ("s1", "s2"):  # two servers, each with its own local store and outbox
        _seed(tmp_path / server / "store.db", postgres.admin_url, tag=server)
    # nothing forwarded yet by anyone but the detached forwarders; fleet sends what its own machine holds
    env = {"KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url, "KERNEL_SENTINEL_HOME": str(tmp_path / "s1")}
    assert wait_for(lambda: _cli("--json", env={**env, "KERNEL_SENTINEL_HOME": str(tmp_path / "s2")}).returncode == 0)
    proc = _cli("--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["deaths"]["total"] == 14 and data["memory_errors"]["total"] == 6
    assert (data["top_cells"][0]["deaths"], data["top_cells"][0]["memory_errors"]) == (12, 6)
    with SharedStore(postgres.admin_url) as shared:  # same numbers from the library call, same SQL on both stores
        assert fleet_summary(shared, since="7d", by="cause")["deaths"]["by"] == {"oom_kill": 12, "segfault": 2}


LAUNCH = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]
SENTINEL = {"argv": LAUNCH, "display_name": "sentinel", "language": "python"}


@pytest.mark.cgroup
def test_a_real_memory_error_and_a_real_death_are_counted(kernel, tmp_path, monkeypatch):
    home = os.environ["KERNEL_SENTINEL_HOME"]
    k = kernel(limit_bytes=512 * MiB, kernelspec=SENTINEL,
               env={"KERNEL_SENTINEL_CHECKPOINT": "0", "KERNEL_SENTINEL_MEMORY_LIMIT": "300M",
                    "JPY_SESSION_NAME": "course/week1.ipynb"})
    res = k.run("import numpy as np\n# load everything\nbig = np.ones(400 * 2**20 // 8)")
    assert res.ename == "MemoryBudgetError" and k.alive
    with Store() as store:
        assert wait_for(lambda: store.memory_errors(), timeout=30)
        (err,) = store.memory_errors()
    assert err["notebook"] == "course/week1.ipynb" and err["library"] == "numpy" and err["budget_bytes"] == 300 * MiB
    assert "400 * 2**20" in err["cell_code"] and "value" not in err["report"]
    assert k.run("import ctypes; ctypes.string_at(0)").status == "died"
    data = wait_for(lambda: (d := json.loads(_cli("--json", env={"KERNEL_SENTINEL_HOME": home}).stdout))["deaths"]["total"] and d,
                    timeout=60)
    assert data["deaths"]["by"] == {"segfault": 1} and data["memory_errors"]["total"] == 1


def _deaths_cli(home, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_sentinel", "deaths", "--json"], capture_output=True, text=True,
                          env={**os.environ, "KERNEL_SENTINEL_HOME": str(home), "KERNEL_SENTINEL_DATABASE_URL": url},
                          timeout=120)


def test_fleet_names_the_records_the_database_refused(postgres, tmp_path):
    """A server whose role may not write what it holds (dave's server writing in alice's name): the database refuses
    the row, fleet and deaths say so in one line with PostgreSQL's reason, the record stays in the local store."""
    from kernel_sentinel.fleet import roles

    roles.setup(postgres.admin_url)
    roles.add_user(postgres.admin_url, "dave", "pw-dave")
    dave = postgres.url("dave", "pw-dave")
    home = tmp_path / "dave"
    old = os.environ.get("KERNEL_SENTINEL_DATABASE_URL")
    os.environ["KERNEL_SENTINEL_DATABASE_URL"] = dave
    try:
        with Store(home / "store.db") as store:
            _add(store, 1, "dave", "oom_kill", OTHER_CELL, tag="own-")
            _add(store, 2, "alice", "oom_kill", OTHER_CELL, tag="forged-")  # the database refuses this one
    finally:
        if old is None:
            os.environ.pop("KERNEL_SENTINEL_DATABASE_URL", None)
        else:
            os.environ["KERNEL_SENTINEL_DATABASE_URL"] = old
    env = {"KERNEL_SENTINEL_HOME": str(home), "KERNEL_SENTINEL_DATABASE_URL": dave}
    proc = _cli("--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["deaths"]["total"] == 1  # dave's own death reached the database; the forged one did not
    assert (data["outbox"]["refused"], data["outbox"]["waiting"]) == (1, 0)
    assert "row-level security" in data["outbox"]["reason"]
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "1 record refused by the shared database on 1 server (dave@" in proc.stderr, proc.stderr
    assert "row-level security" in proc.stderr and "pw-dave" not in proc.stderr  # no password in messages
    for _ in range(2):  # two more refusals: left aside, still named, still kept
        proc = _cli("--json", env=env)
    assert json.loads(proc.stdout)["outbox"]["given_up"] == 1 and "1 record refused" in proc.stderr
    deaths = _deaths_cli(home, dave)  # this server's own view: its outbox, and that it is no longer retried
    assert deaths.returncode == 0 and deaths.stderr.count("\n") == 1, deaths.stderr
    assert "1 record refused by the shared database (no longer retried: fix the cause, then `kernel-sentinel fleet " \
        "--retry-refused`)" in deaths.stderr
    # the admin, elsewhere, cannot read dave's outbox: dave's forwarder reported it to the shared database
    admin = _cli("--json", env={"KERNEL_SENTINEL_HOME": str(tmp_path / "admin"),
                                "KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url})
    assert admin.returncode == 0, admin.stderr
    refused = json.loads(admin.stdout)["refused"]
    assert refused["records"] == 1 and [s["user"] for s in refused["servers"]] == ["dave"]
    assert refused["servers"][0]["store"] == str(home / "store.db") and refused["servers"][0]["given_up"] == 1
    assert "1 record refused by the shared database on 1 server (dave@" in admin.stderr
    assert "row-level security" in admin.stderr and admin.stderr.count("\n") == 1
    assert {d["kernel_id"] for d in json.loads(deaths.stdout)} == {"own-dave-1", "forged-alice-2"}  # nothing lost
    with SharedStore(postgres.admin_url) as shared:
        assert not shared.rows("SELECT 1 FROM deaths WHERE kernel_id = 'forged-alice-2'")

    # The database down: fleet's one line names the outage and what this server holds back meanwhile.
    os.environ["KERNEL_SENTINEL_DATABASE_URL"] = dave
    try:
        with Store(home / "store.db") as store:
            postgres.stop()
            try:
                _add(store, 3, "dave", "segfault", OTHER_CELL, tag="while-down-")
                proc = _cli("--json", env=env)
                deaths = _deaths_cli(home, dave)
            finally:
                postgres.start()
    finally:
        if old is None:
            os.environ.pop("KERNEL_SENTINEL_DATABASE_URL", None)
        else:
            os.environ["KERNEL_SENTINEL_DATABASE_URL"] = old
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot reach the database" in proc.stderr and "1 record of this server waiting to be sent" in proc.stderr
    assert "1 record refused" in proc.stderr and "Traceback" not in proc.stderr
    assert "1 record of this server waiting to be sent" in deaths.stderr and deaths.stderr.count("\n") == 1
    proc = _cli("--json", env=env)  # back up: the waiting record lands, the refused one is still named
    assert json.loads(proc.stdout)["deaths"]["total"] == 2
    assert json.loads(proc.stdout)["outbox"] == {"waiting": 0, "refused": 1, "given_up": 1,
                                                 "reason": json.loads(proc.stdout)["outbox"]["reason"]}


def test_fleet_on_postgresql_names_this_servers_unreadable_store(postgres, tmp_path):
    """The shared view is read, and this server's corrupt store (whose records it cannot send) is named in one line."""
    (tmp_path / "store.db").write_bytes(b"this is not a database" * 200)
    proc = _cli("--json", env={"KERNEL_SENTINEL_HOME": str(tmp_path), "KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url})
    assert proc.returncode == 0, proc.stderr
    assert "deaths" in json.loads(proc.stdout)
    assert proc.stderr.count("\n") == 1 and "this server's" in proc.stderr and "not a database" in proc.stderr


def test_refused_records_land_after_the_cause_is_fixed(postgres, tmp_path):
    """erin's server was given frank's database URL: her records are refused three times and left aside; once her
    own URL is set, fleet --retry-refused sends them and the admin no longer sees a refusal."""
    from kernel_sentinel.fleet import roles
    from kernel_sentinel.fleet.forward import forward

    roles.setup(postgres.admin_url)
    roles.add_user(postgres.admin_url, "erin", "pw-erin")
    roles.add_user(postgres.admin_url, "frank", "pw-frank")
    wrong, right = postgres.url("frank", "pw-frank"), postgres.url("erin", "pw-erin")
    home = tmp_path / "erin"
    os.environ["KERNEL_SENTINEL_DATABASE_URL"] = wrong
    try:
        with Store(home / "store.db") as store:
            _add(store, 1, "erin", "oom_kill", OTHER_CELL, tag="misrouted-")
        for _ in range(3):
            forward(home / "store.db", wrong)
    finally:
        os.environ.pop("KERNEL_SENTINEL_DATABASE_URL", None)
    admin_env = {"KERNEL_SENTINEL_HOME": str(tmp_path / "admin"), "KERNEL_SENTINEL_DATABASE_URL": postgres.admin_url}
    servers = json.loads(_cli("--json", env=admin_env).stdout)["refused"]["servers"]
    assert [(s["user"], s["given_up"]) for s in servers if s["store"] == str(home / "store.db")] == [("frank", 1)]
    env = {"KERNEL_SENTINEL_HOME": str(home), "KERNEL_SENTINEL_DATABASE_URL": right}
    assert json.loads(_cli("--json", env=env).stdout)["outbox"]["given_up"] == 1  # her URL alone: still aside
    proc = _cli("--json", "--retry-refused", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "kernel-sentinel fleet: 1 refused record of this server queued again\n"
    data = json.loads(proc.stdout)
    assert data["deaths"]["total"] == 1 and data["outbox"] == {"waiting": 0, "refused": 0, "given_up": 0, "reason": None}
    with SharedStore(postgres.admin_url) as shared:
        assert shared.rows("SELECT username FROM deaths WHERE kernel_id = 'misrouted-erin-1'") == [{"username": "erin"}]
    admin = _cli("--json", env=admin_env)  # frank's old report of that store no longer counts: erin's is newer
    assert [s for s in json.loads(admin.stdout)["refused"]["servers"] if s["store"] == str(home / "store.db")] == []
