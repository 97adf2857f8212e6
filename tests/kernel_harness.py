"""Test infrastructure: a real ipykernel, started through jupyter_client, inside a fresh memory cgroup.

Every test that exercises the problem this project exists for uses ``KernelHarness``: it writes a
kernelspec into a temporary folder (the stock ipykernel one, or one the test passes, e.g. from
``kernel-sentinel install``), prefixes its argv so the kernel enters its own memory cgroup before it
starts (``kernel_sentinel.confine``), runs cells, and reports each cell's outcome and outputs, the
kernel's exit status, and the cgroup's OOM-kill count. The cgroup is removed afterwards, even when the
test fails. Where no cgroup can be made, the harness falls back to RLIMIT_DATA or skips with a reason.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from kernel_sentinel.confine import ConfineError, MemoryCgroup, confined_command

_VALUE = "@@kernel-harness-value@@ "
STOCK_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@dataclass
class CellResult:
    """What one execute request produced, as a frontend would have seen it."""

    status: str  # "ok" | "error" | "died" | "timeout"
    execution_count: int | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)  # display_data / execute_result / error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def text(self) -> str:
        """Everything a user would read: streams, text/plain of outputs, the error."""
        parts = [self.stdout, self.stderr]
        for out in self.outputs:
            data = out.get("data") or {}
            if "text/plain" in data:
                parts.append(data["text/plain"])
        if self.ename:
            parts.append(f"{self.ename}: {self.evalue}")
        return "\n".join(p for p in parts if p)

    def html(self) -> str:
        return "\n".join((o.get("data") or {}).get("text/html", "") for o in self.outputs)


class KernelHarness:
    """One real kernel in one memory cgroup; call ``close()`` (the fixture does)."""

    def __init__(
        self,
        workdir: Path,
        *,
        limit_bytes: int | None = None,
        kernelspec: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        confine: str = "cgroup",
    ) -> None:
        """``confine``: "cgroup" (skip the test where none can be made), "cgroup-or-rlimit", or "rlimit"."""
        self.workdir = workdir
        self.limit_bytes = limit_bytes
        self.cgroup: MemoryCgroup | None = None
        self.confinement = "none"
        spec = dict(kernelspec or {"argv": STOCK_ARGV, "display_name": "stock", "language": "python"})
        rlimit = None
        if confine not in ("cgroup", "cgroup-or-rlimit", "rlimit"):
            raise ValueError(f"unknown confine={confine!r}")
        if limit_bytes is not None and confine != "rlimit":
            try:
                self.cgroup = MemoryCgroup.create(limit_bytes, prefix="ks-test")
                self.confinement = "cgroup"
            except ConfineError as exc:
                if confine == "cgroup":
                    pytest.skip(f"needs a memory cgroup: {exc}")
        if limit_bytes is not None and self.cgroup is None:
            rlimit = limit_bytes
            self.confinement = "rlimit"
        spec["argv"] = confined_command(spec["argv"], cgroup=self.cgroup, rlimit_data=rlimit)
        kernels = workdir / "kernels"
        (kernels / "harness").mkdir(parents=True, exist_ok=True)
        (kernels / "harness" / "kernel.json").write_text(json.dumps(spec))
        ksm = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="harness", kernel_spec_manager=ksm)
        self._env = {**os.environ, **(env or {})}
        self._returncode: int | None = None
        self.kc = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> KernelHarness:
        try:
            self.km.start_kernel(env=self._env, cwd=str(self.workdir))
            self.kc = self.km.client()
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=timeout)
        except Exception:
            self.close()
            raise
        return self

    @property
    def pid(self) -> int:
        """The pid jupyter_client started and watches (the sentinel launcher, or ipykernel itself)."""
        return self.km.provisioner.pid  # type: ignore[union-attr]

    @property
    def kernel_pid(self) -> int:
        """The ipykernel process itself: ``pid``, or its ipykernel child when a launcher supervises it."""
        import psutil

        top = psutil.Process(self.pid)
        for proc in (top, *top.children(recursive=True)):
            try:
                if any("ipykernel" in part for part in proc.cmdline()):
                    return proc.pid
            except psutil.Error:
                continue
        return self.pid

    def poll(self) -> int | None:
        """Return the kernel's exit status (negative: killed by that signal), or None while it runs."""
        if self._returncode is None and self.km.provisioner is not None:
            process = getattr(self.km.provisioner, "process", None)
            if process is not None:
                self._returncode = process.poll()
        return self._returncode

    @property
    def alive(self) -> bool:
        return self.poll() is None

    @property
    def exit_status(self) -> int | None:
        return self.poll()

    def wait_for_death(self, timeout: float = 30) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.poll()

    def oom_kills(self) -> int:
        """Return the cgroup's OOM-kill counter (0 without a cgroup)."""
        return self.cgroup.oom_kills() if self.cgroup else 0

    def signal(self, signum: int, *, to_launcher: bool = False) -> None:
        """Send ``signum`` to the ipykernel process alone (or the launcher), as something outside would."""
        os.kill(self.pid if to_launcher else self.kernel_pid, signum)

    def close(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
            if self.km.has_kernel:
                self.poll()
                self.km.shutdown_kernel(now=True)
        except Exception:  # a kernel that died mid-shutdown must not hide the test's own failure
            pass
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()
                self.cgroup = None

    # -- cells -------------------------------------------------------------------------------------

    def run(self, code: str, timeout: float = 120) -> CellResult:
        """Execute one cell and return what it produced; notices a kernel that dies while it runs."""
        assert self.kc is not None, "start() the harness first"
        started = time.monotonic()
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False)
        result = CellResult(status="timeout")
        reply: dict[str, Any] | None = None
        idle = False
        deadline = started + timeout
        while True:
            idle = self._drain_iopub(msg_id, result, wait=0.05 if reply is None else 0.2) or idle
            if reply is None:
                try:
                    msg = self.kc.get_shell_msg(timeout=0.05)
                    if msg["parent_header"].get("msg_id") == msg_id:
                        reply = msg["content"]
                except Exception:  # queue.Empty: nothing yet
                    pass
            if reply is not None and idle:
                break
            if reply is None and not self.alive:
                self._drain_iopub(msg_id, result, wait=0.2)
                result.status = "died"
                break
            if time.monotonic() > deadline:
                break
        if reply is not None:
            result.status = reply.get("status", "error")
            result.execution_count = reply.get("execution_count")
            if result.status == "error" and not result.ename:
                result.ename, result.evalue = reply.get("ename"), reply.get("evalue")
                result.traceback = reply.get("traceback", [])
        result.seconds = time.monotonic() - started
        return result

    def wait_for_iopub(
        self, msg_id: str, msg_type: str, state: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Return the first iopub message of ``msg_type`` (a status: of execution ``state``) that ``msg_id`` caused.

        For a test driving ``kc.execute`` itself: that its cell started (``execute_input``), or that the kernel is
        idle after it (``status``, ``idle``). Raises AssertionError after ``timeout`` seconds.
        """
        assert self.kc is not None, "start() the harness first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except Exception:  # queue.Empty: nothing yet
                continue
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == msg_type
                    and (state is None or msg["content"].get("execution_state") == state)):
                return msg
        raise AssertionError(f"no {msg_type} {state or ''} message for {msg_id} in {timeout:.0f} s")

    def _drain_iopub(self, msg_id: str, result: CellResult, wait: float) -> bool:
        """Collect this cell's iopub messages into ``result``; return True once the kernel went idle."""
        assert self.kc is not None
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=wait)
            except Exception:  # queue.Empty
                return False
            wait = 0.0 if wait < 0.1 else 0.02
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("display_data", "execute_result"):
                result.outputs.append({"output_type": kind, **content})
            elif kind == "error":
                result.outputs.append({"output_type": "error", **content})
                result.ename, result.evalue = content["ename"], content["evalue"]
                result.traceback = content["traceback"]
            elif kind == "status" and content["execution_state"] == "idle":
                return True

    def restart_timed(self) -> tuple[float, float]:
        """Return (seconds of its shutdown half, seconds of its start half until ready) of a graceful restart.

        What ``restart_kernel(now=False)`` does, step by step, so that the benches time the halves apart."""
        t0 = time.perf_counter()
        self.km.shutdown_kernel(now=False, restart=True)
        t1 = time.perf_counter()
        self.km.start_kernel(**self.km._launch_args)
        self.kc.wait_for_ready(timeout=60)
        return t1 - t0, time.perf_counter() - t1

    def value(self, expression: str) -> Any:
        """Return the value of a JSON-able expression evaluated in the kernel."""
        res = self.run(f"import json as _j; print('{_VALUE}' + _j.dumps({expression}))")
        if not res.ok:
            raise AssertionError(f"{expression!r} failed in the kernel: {res.ename}: {res.evalue}")
        # Other lines may follow (the extension's notes after a cell): take ours by its marker.
        line = next(line for line in reversed(res.stdout.splitlines()) if line.startswith(_VALUE))
        return json.loads(line[len(_VALUE) :])


def kill_signal_name(status: int | None) -> str | None:
    """Return "SIGKILL" for -9 and so on; None for a normal exit or a running process."""
    if status is None or status >= 0:
        return None
    return signal.Signals(-status).name


def assert_oom_killed(k: KernelHarness, code: str, timeout: float = 180, context: Any = None) -> None:
    """Run ``code`` in ``k`` and assert that the OOM killer ended the kernel: a killer test's stock control.

    Died in the cell, by SIGKILL, with the group's OOM-kill counter moved. ``context()``, when given, is called
    for the failure message (what the group looked like).
    """
    before = k.oom_kills()
    res = k.run(code, timeout=timeout)
    assert res.status == "died", (res.status, context() if context else None, res.text()[:1500])
    k.wait_for_death()
    assert kill_signal_name(k.exit_status) == "SIGKILL"
    assert k.oom_kills() > before


def standin_supervisor(go: Path) -> list[str]:
    """Return the command of a supervisor whose kernel is a stand-in that says "ready" once ``go`` exists.

    The supervisor's own start-up and chores measured or tested without a real kernel's: the stand-in waits for the
    file, writes the supervisor its ready byte, then sleeps (tests/test_default_cost_start.py,
    bench/bench_supervisor_cpu.py).
    """
    kernel = (
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "os.write(int(os.environ['KERNEL_SENTINEL_READY_FD']), b'R')\n"
        "time.sleep(600)\n"
    )
    run = f"from kernel_sentinel.autopsy.supervisor import supervise; supervise([], [{sys.executable!r}, '-c', {kernel!r}])"
    return [sys.executable, "-c", run]


def python_in_home(script: str, home: Path) -> str:
    """Return what ``python -c script`` printed, run with ``home`` as KERNEL_SENTINEL_HOME (it must exit 0).

    The supervisor's own module-level state (its imports, its store) is asserted in a fresh interpreter, never in
    pytest's, where everything is imported already.
    """
    import subprocess

    env = {**os.environ, "KERNEL_SENTINEL_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def compile_sentinel(src: str | None = None) -> None:
    """Write the bytecode of ``src``'s kernel_sentinel (the imported one without ``src``), as ``pip install`` does.

    For the benches: a checkout may hold stale .pyc files (PYTHONDONTWRITEBYTECODE is set on some machines), and
    every kernel and supervisor would then compile its modules at start, a cost no installed user pays.
    """
    import compileall

    if src is None:
        import kernel_sentinel

        package = Path(kernel_sentinel.__file__).parent
    else:
        package = Path(src, "kernel_sentinel")
    compileall.compile_dir(str(package), quiet=1)
