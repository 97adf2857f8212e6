"""The headless run: take a notebook and ``RunOptions``, return a ``RunResult`` (the executed notebook written).

Runs it in a sentinel kernel, cell by cell, measuring each cell's time and memory.

Built on nbclient's ``NotebookClient`` with our own ``AsyncKernelManager`` whose kernelspec (written to
a temporary folder, nothing global) starts ``kernel_sentinel.launch``, optionally inside a memory cgroup
of its own. Cells run one at a time so the runner can bracket each with measurements, stop at the first
failure, and mark the rest "not_run". The cgroup, the kernel and the temporary folder are removed in a
``finally``, on Ctrl-C (KeyboardInterrupt) too.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import nbformat

from ..confine import ConfineError, MemoryCgroup, confined_command
from ..sizes import format_bytes
from .death import describe_status, runner_death
from .notebook import META_KEY, RunUsageError, check_kernel, inject_parameters, is_runnable, load, mark_not_run
from .sampler import MemorySampler, Timeline

EXIT_OK, EXIT_ERROR, EXIT_DIED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 64, 130


@dataclass
class RunOptions:
    """What ``kernel-sentinel run`` was asked to do."""

    notebook: str
    output: str | None = None
    memory_limit: str | None = None  # as typed: "1G", "512M", "80%"
    timeout: float | None = None  # per cell, seconds
    params: list[tuple[str, str]] = field(default_factory=list)
    json_path: str | None = None
    html_path: str | None = None
    interval: float = 0.025  # memory sampling period
    autopsy_wait: float = 5.0  # how long to wait for the autopsy to record a death
    cwd: str | None = None  # the kernel's working directory; default: the notebook's folder
    kernel_env: dict[str, str] = field(default_factory=dict)


@dataclass
class CellRun:
    """One code cell's outcome and measurements (the JSON report's per-cell record)."""

    index: int
    execution_count: int | None
    status: str  # ok | error | died | not_run
    seconds: float | None = None
    peak_bytes: int | None = None
    after_bytes: int | None = None
    error: dict[str, str] | None = None
    start: float | None = None  # seconds since the run started (for the plot)
    end: float | None = None
    peak_rss_bytes: int | None = None
    sampled_peak_bytes: int | None = None
    watermark_bytes: int | None = None
    source: str = ""


@dataclass
class RunResult:
    """Everything one run produced: the report's content."""

    notebook: str
    output: str
    exit_code: int
    outcome: str  # ok | error | died | interrupted
    cells: list[CellRun]
    budget: dict[str, Any]
    confinement: dict[str, Any]
    kernel_id: str | None = None
    kernel_exit: int | None = None
    death: dict[str, Any] | None = None
    failed_cell: int | None = None
    started: str = ""
    seconds: float = 0.0
    timeline: Timeline = field(default_factory=Timeline)
    sampling: dict[str, Any] = field(default_factory=dict)
    guard: bool = False
    autopsy: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress(Protocol):
    """What the runner tells a progress display; report/run_terminal.py has the rich one."""

    def started(self, total: int, confinement: dict[str, Any]) -> None: ...
    def cell_started(self, number: int, total: int, cell: CellRun, current: Callable[[], int | None]) -> None: ...
    def cell_finished(self, number: int, total: int, cell: CellRun) -> None: ...
    def finished(self) -> None: ...


def available(module: str) -> bool:
    """Return True when ``module`` can be found here (the guard and the autopsy land separately)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def guard_installed() -> bool:
    """Return True when the in-kernel guard is there (its core and its IPython extension hook)."""
    return available("kernel_sentinel.guard.core") and available("kernel_sentinel.guard.extension")


def autopsy_installed() -> bool:
    """Return True when ``kernel_sentinel.autopsy.death_report`` can be called."""
    try:
        from .. import autopsy
    except ImportError:
        return False
    return callable(getattr(autopsy, "death_report", None))


def default_output(notebook: str) -> str:
    """Return ``NAME.out.ipynb`` next to ``NAME.ipynb``: the input is never overwritten unless -o names it."""
    base = notebook[: -len(".ipynb")] if notebook.endswith(".ipynb") else notebook
    return base + ".out.ipynb"


def _machine_budget() -> tuple[int | None, str]:
    from ..memory import snapshot

    snap = snapshot()
    return snap.budget_bytes, snap.source


def prepare(opts: RunOptions) -> tuple[nbformat.NotebookNode, str, int | None]:
    """Return (notebook with parameters injected, output path, limit bytes); RunUsageError on bad input."""
    nb = load(opts.notebook)
    check_kernel(nb, opts.notebook)
    inject_parameters(nb, opts.params)
    output = opts.output or default_output(opts.notebook)
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise RunUsageError(f"cannot write {output}: no such directory {parent}")
    limit = None
    if opts.memory_limit is not None:
        from ..sizes import SizeError, parse_size

        try:
            total = _machine_budget()[0] if str(opts.memory_limit).strip().endswith("%") else None
            limit = parse_size(opts.memory_limit, of=total)
        except SizeError as exc:
            raise RunUsageError(f"--memory-limit: {exc}") from None
    if opts.timeout is not None and opts.timeout <= 0:
        raise RunUsageError(f"--timeout must be positive, got {opts.timeout}")
    for path, what in ((opts.json_path, "--json"), (opts.html_path, "--html")):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise RunUsageError(f"{what}: no such directory for {path}")
    return nb, output, limit


def _confine(limit: int | None, guard: bool) -> tuple[MemoryCgroup | None, int | None, dict[str, Any]]:
    """Return (cgroup, RLIMIT_DATA backstop, description) for ``limit``; the description says which."""
    if limit is None:
        return None, None, {"kind": "none", "detail": "no --memory-limit: the kernel has this machine's budget"}
    try:
        group = MemoryCgroup.create(limit, prefix="ks-run")
    except ConfineError as exc:
        if guard:
            detail = f"no memory cgroup here ({exc}); the guard's budget alone (KERNEL_SENTINEL_MEMORY_LIMIT)"
            return None, None, {"kind": "guard", "limit_bytes": limit, "detail": detail}
        # Without a cgroup and without the guard nothing would stop the kernel: RLIMIT_DATA at least
        # turns big allocations into MemoryError (FACTS.md), so the machine is never at risk.
        detail = f"no memory cgroup here ({exc}) and no guard installed; RLIMIT_DATA {format_bytes(limit)} as backstop"
        return None, limit, {"kind": "rlimit", "limit_bytes": limit, "detail": detail}
    detail = f"memory cgroup v{group.version} {group.path}, limit {format_bytes(limit)}"
    return group, None, {"kind": f"cgroup v{group.version}", "path": group.path, "limit_bytes": limit, "detail": detail}


def _write_kernelspec(folder: str, cgroup: MemoryCgroup | None, rlimit: int | None) -> None:
    argv = [sys.executable, "-m", "kernel_sentinel.launch", "-f", "{connection_file}"]
    if cgroup is not None or rlimit is not None:
        argv = confined_command(argv, cgroup=cgroup, rlimit_data=rlimit)
    # Named python3 so nbclient treats it as ipykernel (in-memory history: no SQLite file shared between runs).
    spec_dir = os.path.join(folder, "kernels", "python3")
    os.makedirs(spec_dir)
    spec = {"argv": argv, "display_name": "Python 3 (sentinel)", "language": "python"}
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        json.dump(spec, f)


def _autopsy_report(kernel_id: str, wait: float) -> dict[str, Any] | None:
    """Return the autopsy's why-dict for this kernel's death, or None (not installed, nothing recorded)."""
    if not autopsy_installed():
        return None
    from ..autopsy import death_report

    try:
        report = death_report(kernel_id, wait=wait)
    except Exception:  # an autopsy bug must not lose the run's own report
        return None
    if report is not None:
        report = {"source": "autopsy", **report}
    return report


def run_notebook(
    opts: RunOptions,
    progress: Progress | None = None,
    death_output: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> RunResult:
    """Return the outcome of running ``opts.notebook``; writes the output notebook (always).

    ``death_output`` renders a kernel death as the output the dying cell gets in that notebook: the caller
    picks the renderer (the CLI: ``report.death_notebook.render``), the executor renders nothing itself.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_runtime_dir
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb, output, limit = prepare(opts)
    guard, autopsy = guard_installed(), autopsy_installed()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t_start = time.monotonic()
    if limit is not None:
        budget = {"bytes": limit, "source": f"--memory-limit {opts.memory_limit}"}
    else:
        machine, source = _machine_budget()
        budget = {"bytes": machine, "source": source}

    runnable = [i for i, c in enumerate(nb.cells) if is_runnable(c)]
    records: list[CellRun] = []
    outcome, exit_code, failed, death, kernel_exit = "ok", EXIT_OK, None, None, None
    kernel_id = str(uuid.uuid4())
    sampler: MemorySampler | None = None
    cgroup, rlimit, confinement = _confine(limit, guard)
    folder = tempfile.mkdtemp(prefix="ks-run-")
    km = client = kernel_log = None
    try:
        _write_kernelspec(folder, cgroup, rlimit)
        ksm = KernelSpecManager(kernel_dirs=[os.path.join(folder, "kernels")], ensure_native_kernel=False)
        km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        km.kernel_id = kernel_id  # the autopsy finds the death by this id, taken from the file name
        km.connection_file = os.path.join(runtime, f"kernel-{kernel_id}.json")
        client = NotebookClient(
            nb,
            km=km,
            timeout=int(-(-opts.timeout // 1)) if opts.timeout else None,
            interrupt_on_timeout=True,
            error_on_timeout={
                "ename": "CellTimeoutError",
                "evalue": f"the cell ran longer than --timeout {opts.timeout:g} s and was interrupted"
                if opts.timeout
                else "",
                "traceback": [],
            },
            record_timing=True,
            allow_errors=False,
        )
        env = {**os.environ, **opts.kernel_env}
        if limit is not None:
            env["KERNEL_SENTINEL_MEMORY_LIMIT"] = str(limit)
        cwd = opts.cwd or os.path.dirname(os.path.abspath(opts.notebook))
        oom_before = cgroup.oom_kills() if cgroup else None
        # The kernel's own stdout/stderr (startup warnings, C-level crash messages) go to a log, not our terminal.
        kernel_log = open(os.path.join(folder, "kernel.log"), "wb")
        startup_error = None
        try:
            client.start_new_kernel(env=env, cwd=cwd, stdout=kernel_log, stderr=kernel_log)
            client.start_new_kernel_client()
        except Exception as exc:  # a kernel that cannot start died before its first cell: exit 2, explained
            startup_error = f"{type(exc).__name__}: {exc}".strip()
        if startup_error is not None:
            kernel_exit = _exit_status(km)
            death = _autopsy_report(kernel_id, opts.autopsy_wait if autopsy else 0.0) or runner_death(
                kernel_exit, oom_kills=None, limit_bytes=limit, peak_bytes=None, cell_execution_count=None
            )
            death["summary"] = f"the kernel did not start ({startup_error}); {death.get('summary')}"
            death["kernel_log_tail"] = _tail(os.path.join(folder, "kernel.log"))
            outcome, exit_code = "died", EXIT_DIED
            for index in runnable:
                mark_not_run(nb.cells[index])
                records.append(CellRun(index=index, execution_count=None, status="not_run", source=_head(nb.cells[index])))
        if startup_error is None:
            sampler = MemorySampler(km.provisioner.pid, cgroup, interval=opts.interval).start()
            if progress:
                progress.started(len(runnable), confinement)
            try:
                info = client.wait_for_reply(client.kc.kernel_info())
                if info and "language_info" in info["content"]:
                    nb.metadata["language_info"] = info["content"]["language_info"]
            except Exception:  # the notebook still runs without fresh language_info
                pass
            count = 0
            for number, index in enumerate(runnable, start=1):
                cell = nb.cells[index]
                if outcome != "ok":
                    mark_not_run(cell)
                    records.append(CellRun(index=index, execution_count=None, status="not_run", source=_head(cell)))
                    if progress:
                        progress.cell_finished(number, len(runnable), records[-1])
                    continue
                count += 1
                rec = CellRun(index=index, execution_count=count, status="ok", source=_head(cell))
                if progress:
                    progress.cell_started(number, len(runnable), rec, lambda: sampler.last_bytes)
                sampler.begin_cell(index)
                rec.start = round(sampler.elapsed(), 4)
                t0 = time.monotonic()
                try:
                    client.execute_cell(cell, index, execution_count=count)
                except CellExecutionError as exc:
                    rec.status, rec.error = "error", {"ename": exc.ename, "evalue": exc.evalue}
                except CellTimeoutError as exc:  # the interrupt itself did not get an answer
                    rec.status, rec.error = "error", {"ename": "CellTimeoutError", "evalue": str(exc).splitlines()[0]}
                except DeadKernelError:
                    rec.status = "died"
                except KeyboardInterrupt:
                    rec.status, rec.error = "error", {"ename": "KeyboardInterrupt", "evalue": "run interrupted"}
                    outcome, exit_code = "interrupted", EXIT_INTERRUPTED
                    _quiet_abandoned_tasks()
                rec.seconds = round(time.monotonic() - t0, 4)
                mem = sampler.end_cell()
                rec.end = round(sampler.elapsed(), 4)
                rec.peak_bytes, rec.after_bytes = mem.peak_bytes, mem.after_bytes
                rec.peak_rss_bytes, rec.sampled_peak_bytes = mem.peak_rss_bytes, mem.sampled_peak_bytes
                rec.watermark_bytes = mem.watermark_bytes
                cell.execution_count = count
                if rec.status == "died":
                    rec.after_bytes = None  # what is left in the group after a death is not the kernel's
                    kernel_exit = _exit_status(km)
                    oom = (cgroup.oom_kills() - (oom_before or 0)) if cgroup else None
                    death = _autopsy_report(kernel_id, opts.autopsy_wait if autopsy else 0.0) or runner_death(
                        kernel_exit,
                        oom_kills=oom,
                        limit_bytes=limit,
                        peak_bytes=rec.peak_bytes,
                        cell_execution_count=count,
                    )
                    if death.get("source") == "runner":
                        death["kernel_log_tail"] = _tail(os.path.join(folder, "kernel.log"))
                    rec.error = {"ename": "DeadKernelError", "evalue": str(death.get("summary"))}
                    if death_output is not None:
                        cell.outputs.append(nbformat.from_dict(death_output(death)))
                    outcome, exit_code, failed = "died", EXIT_DIED, index
                elif rec.status == "error":
                    failed = index
                    if outcome == "ok":
                        outcome, exit_code = "error", EXIT_ERROR
                cell.metadata[META_KEY] = _cell_meta(rec)
                records.append(rec)
                if progress:
                    progress.cell_finished(number, len(runnable), rec)
    finally:
        if sampler is not None:
            sampler.stop()
        if client is not None and client.kc is not None:
            try:
                client.kc.stop_channels()
            except Exception:
                pass
        if km is not None:
            _shutdown(km)
        if cgroup is not None:
            cgroup.remove()
        if kernel_log is not None:
            kernel_log.close()
        shutil.rmtree(folder, ignore_errors=True)
        if progress:
            progress.finished()

    nb.metadata[META_KEY] = {"outcome": outcome, "exit_code": exit_code, "failed_cell": failed, "started": started}
    for cell in nb.cells:  # a code cell nbclient never reached (e.g. empty ones after a failure)
        if cell.cell_type == "code" and META_KEY not in cell.metadata and failed is not None:
            if not is_runnable(cell):
                mark_not_run(cell)
    nbformat.write(nb, output)
    result = RunResult(
        notebook=opts.notebook,
        output=output,
        exit_code=exit_code,
        outcome=outcome,
        cells=records,
        budget=budget,
        confinement=confinement,
        kernel_id=kernel_id,
        kernel_exit=kernel_exit,
        death=death,
        failed_cell=failed,
        started=started,
        seconds=round(time.monotonic() - t_start, 3),
        timeline=sampler.timeline if sampler else Timeline(),
        sampling={"interval_s": opts.interval, "source": sampler.source if sampler else None},
        guard=guard,
        autopsy=autopsy,
    )
    return result


def _tail(path: str, lines: int = 15) -> list[str]:
    """Return the last lines the kernel wrote to its own stdout/stderr (a C library's last words)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


def _head(cell: nbformat.NotebookNode) -> str:
    lines = [line for line in cell.source.splitlines() if line.strip()]
    return lines[0][:80] if lines else ""


def _cell_meta(rec: CellRun) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "status": rec.status,
        "seconds": rec.seconds,
        "peak_bytes": rec.peak_bytes,
        "after_bytes": rec.after_bytes,
    }
    if rec.error:
        meta["error"] = rec.error
    return meta


def _quiet_abandoned_tasks() -> None:
    """Silence nbclient's tasks left mid-cell by Ctrl-C: their "exception never retrieved" is not news."""
    try:
        from jupyter_core.utils import ensure_event_loop

        ensure_event_loop().set_exception_handler(lambda loop, context: None)
    except Exception:
        pass


def _exit_status(km: Any) -> int | None:
    """Return the dead kernel's Popen returncode (negative = signal), waiting briefly for the reap."""
    process = getattr(km.provisioner, "process", None) if km.provisioner else None
    if process is None:
        return None
    deadline = time.monotonic() + 5
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return process.poll()


def _shutdown(km: Any) -> None:
    """Stop the kernel we started; a kernel that is already dead just gets its resources cleaned up."""
    from jupyter_core.utils import run_sync

    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    except Exception:
        process = getattr(km.provisioner, "process", None) if km.provisioner else None
        if process is not None and process.poll() is None:
            process.kill()  # our own child, by its Popen handle
    try:
        run_sync(km.cleanup_resources)()
    except Exception:
        pass


__all__ = ["RunOptions", "RunResult", "CellRun", "RunUsageError", "run_notebook", "describe_status"]
