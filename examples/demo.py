"""``make demo``: the same notebook under a 1 GiB memory limit, run by stock Jupyter and by kernel-sentinel.

1. Stock: nbclient with the stock ipykernel kernelspec, the kernel inside a 1 GiB memory cgroup of its
   own. Cell 4's merge explodes; the OOM killer SIGKILLs the kernel; nbclient raises DeadKernelError.
2. kernel-sentinel: ``kernel-sentinel run --memory-limit 1G`` on the same notebook. With the guard, cell 4
   raises MemoryBudgetError and the kernel survives (exit 1); the cell is marked failed, later cells not
   run, and the report says why. Without the guard (not installed, or KERNEL_SENTINEL_GUARD=0) it still
   explains the death (exit 2), and the demo says so.

Safety: the stock kernel only ever runs inside a cgroup of at most 1 GiB; where none can be made, the
demo does not run it (it would have nothing to stop it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "sales_promotions.ipynb"
LIMIT = "1G"
console = Console()


def stock_jupyter(workdir: Path) -> dict:
    """Run the notebook as papermill/nbclient users do today, in a 1 GiB cgroup; return what they get."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    from kernel_sentinel.confine import ConfineError, MemoryCgroup, confined_command
    from kernel_sentinel.sizes import parse_size

    try:
        group = MemoryCgroup.create(parse_size(LIMIT), prefix="ks-demo")
    except ConfineError as exc:
        return {"skipped": f"no memory cgroup can be made here ({exc}); not running a stock kernel unconfined"}
    try:
        spec_dir = workdir / "kernels" / "python3"
        spec_dir.mkdir(parents=True)
        argv = confined_command([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], cgroup=group)
        (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "stock", "language": "python"}))
        # Async, as nbclient expects: with a blocking client its output reader waits forever on a dead kernel.
        km = AsyncKernelManager(
            kernel_name="python3",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(workdir / "kernels")], ensure_native_kernel=False),
        )
        nb = nbformat.read(str(NOTEBOOK), as_version=4)
        client = NotebookClient(nb, km=km, kernel_name="python3")
        error = None
        with open(workdir / "stock-kernel.log", "wb") as log:
            try:
                client.execute(cwd=str(HERE), stdout=log, stderr=log)
            except DeadKernelError as exc:
                error = exc
            except CellExecutionError as exc:
                error = exc
        process = getattr(km.provisioner, "process", None) if km.provisioner else None
        status = process.poll() if process is not None else None
        if process is not None and status is None:
            process.kill()  # our own stock kernel, by its Popen handle
        ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count")]
        out = workdir / "stock.out.ipynb"
        nbformat.write(nb, str(out))
        return {
            "error": f"{type(error).__name__}: {error}" if error else None,
            "exit_status": status,
            "oom_kills": group.oom_kills(),
            "cells_with_count": ran,
            "output": str(out),
        }
    finally:
        group.remove()


def sentinel_run(workdir: Path) -> dict:
    """Run ``kernel-sentinel run`` as a user would; its own progress and summary go to the terminal."""
    out, report, page = workdir / "sentinel.out.ipynb", workdir / "report.json", workdir / "report.html"
    cmd = [
        sys.executable, "-m", "kernel_sentinel", "run", str(NOTEBOOK), "--memory-limit", LIMIT,
        "-o", str(out), "--json", str(report), "--html", str(page),
    ]
    console.print(f"$ kernel-sentinel run {NOTEBOOK.name} --memory-limit {LIMIT} -o ... --json ... --html ...",
                  style="bold")
    code = subprocess.call(cmd)
    data = json.loads(report.read_text()) if report.exists() else {}
    return {"exit": code, "report": data, "output": out, "html": page}


def lab_command(keep: Path) -> str:
    """Return the one command that opens the demo notebook in JupyterLab on a sentinel kernel with the demo's limit.

    It installs that kernelspec into this environment and writes a copy of the notebook asking for it; the
    command builds the lab extension first where `make test` / `make labextension` has not yet.
    """
    name = "python3-sentinel-demo"
    display = f"Python 3 (sentinel, {LIMIT} demo)"
    subprocess.run([sys.executable, "-m", "kernel_sentinel", "install", "--sys-prefix", "--name", name,
                    "--display-name", display, "--memory-limit", LIMIT], capture_output=True, check=False)
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nb.metadata["kernelspec"] = {"name": name, "display_name": display, "language": "python"}
    target = keep / f"lab-{NOTEBOOK.name}"
    nbformat.write(nb, str(target))
    lab = f"{Path(sys.executable).with_name('jupyter')} lab {target}"
    built = (Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "kernel-sentinel" / "package.json").exists()
    return lab if built else f"make -C {HERE.parent} labextension && {lab}"


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through the finally blocks: the cgroup is removed


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    keep = Path(os.environ.get("DEMO_OUT") or tempfile.mkdtemp(prefix="ks-demo-"))
    keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ks-demo-work-"))
    try:
        console.rule(f"1. Stock Jupyter (nbclient + ipykernel) in a {LIMIT} memory cgroup")
        stock = stock_jupyter(work)
        if "skipped" in stock:
            console.print(stock["skipped"], style="yellow")
        else:
            console.print(f"nbclient raised: [bold red]{stock['error']}[/]")
            console.print(f"kernel exit status {stock['exit_status']}, cgroup OOM kills {stock['oom_kills']}; "
                          "every variable is gone, and nothing in the notebook marks the cell that killed it.")
        console.rule(f"2. kernel-sentinel run, same notebook, same {LIMIT} limit")
        sentinel = sentinel_run(keep)
        report = sentinel["report"]
        failed = next((c for c in report.get("cells", []) if c["status"] in ("error", "died")), None)
        if failed is not None:
            nb = nbformat.read(str(sentinel["output"]), as_version=4)
            cell = nb.cells[failed["index"]]
            shown = []
            for o in cell.outputs:
                if o["output_type"] == "error":
                    shown.append(f"{o['ename']}: {o['evalue']}")
                elif "text/plain" in o.get("data", {}):
                    shown.append(o["data"]["text/plain"])
                elif o["output_type"] == "stream":
                    shown.append(o["text"])
            console.print(Panel("\n".join(shown)[:3000] or "(no output)",
                                title=f"what the output notebook shows in cell {failed['index'] + 1}"))

        table = Table(title=f"The same notebook, {LIMIT} limit", show_lines=True)
        table.add_column("")
        table.add_column("stock Jupyter")
        table.add_column("kernel-sentinel run")
        guard = (report.get("protection") or {}).get("guard")
        stock_outcome = stock.get("skipped") or f"{stock.get('error')} (exit status {stock.get('exit_status')})"
        survived = report.get("outcome") == "error"
        table.add_row("kernel", stock_outcome,
                      "survived: MemoryBudgetError in the cell" if survived else f"died: {(report.get('death') or {}).get('summary')}")
        table.add_row("outcome", "an exception, the same for any failure", f"exit {sentinel['exit']} (0 ok, 1 cell raised, 2 died)")
        table.add_row("failing cell", "not marked", f"cell {failed['index'] + 1} marked {failed['status']}" if failed else "-")
        table.add_row("cells after it", "not marked", f"{report.get('totals', {}).get('not_run')} marked not_run")
        table.add_row("per-cell memory", "none", "time, peak and after for every cell (JSON + HTML)")
        console.print(table)
        if not guard:
            console.print(
                "Honest note: the guard is not installed in this tree yet (kernel_sentinel.guard.core/extension), "
                "so kernel-sentinel cannot keep this kernel alive; it explains the death instead (exit 2). "
                "With the guard, cell 4 raises MemoryBudgetError and the run exits 1 with the kernel alive.",
                style="yellow",
            )
        console.print(f"Output notebook, JSON and HTML report: {keep}")
        console.print(f"See it in JupyterLab (notification with the cause, Restore variables, memory in the status bar):\n"
                      f"  {lab_command(keep)}", style="bold", soft_wrap=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
