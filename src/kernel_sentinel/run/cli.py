"""``kernel-sentinel run NOTEBOOK ...``: arguments in, exit code out (0 ok, 1 a cell raised, 2 kernel died, 64 usage)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

EXIT_USAGE, EXIT_INTERRUPTED = 64, 130


def _on_sigterm(signum: int, frame: Any) -> None:
    # A scheduler stopping the job must still get the cgroup and the kernel cleaned up: unwind like Ctrl-C.
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..records import RunReport
    from ..report.run_terminal import RunProgress
    from .execute import RunOptions, run_notebook  # here, not at the top: nbformat costs ~0.3 s at CLI start
    from .notebook import RunUsageError

    opts = RunOptions(
        notebook=args.notebook,
        output=args.output,
        memory_limit=args.memory_limit,
        timeout=args.timeout,
        params=[(name, value) for name, value in (args.parameter or [])],
        json_path=args.json,
        html_path=args.html,
    )
    console = Console(stderr=True)
    if not console.is_terminal:
        console.soft_wrap = True  # one line per fact in CI logs, not wrapped at 80 columns
    progress = None if args.quiet else RunProgress(console)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        from ..report.death_notebook import render as death_output

        result = run_notebook(opts, progress, death_output)
    except RunUsageError as exc:
        print(f"kernel-sentinel run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kernel-sentinel run: interrupted; kernel stopped and cgroup removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    report = RunReport.from_result(result)
    _write_reports(report, args.json, args.html)
    if not args.quiet:
        from ..report.run_terminal import render

        console.print(render(report))
    return result.exit_code


def _write_reports(report: Any, json_path: str | None, html_path: str | None) -> None:
    """Write the run's JSON and HTML reports where asked (the paths were checked before the run)."""
    from ..report import renderer

    for path, fmt in ((json_path, "json"), (html_path, "html")):
        if path:
            with open(path, "w") as f:
                f.write(renderer("run", fmt)(report))


def register_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a notebook headless under the guard; per-cell time and peak memory; marks the failing cell",
        description="Exit 0 when every cell ran, 1 when a cell raised, 2 when the kernel died, 64 on bad input.",
    )
    p.add_argument("notebook", help="the .ipynb to run (never overwritten unless -o names it)")
    p.add_argument("-o", "--output", help="where to write the executed notebook (default: NAME.out.ipynb)")
    p.add_argument("--memory-limit", metavar="SIZE", help="run the kernel in a memory cgroup of SIZE (512M, 1G, 80%%)")
    p.add_argument("--timeout", type=float, metavar="S", help="interrupt a cell that runs longer than S seconds")
    p.add_argument("--json", metavar="REPORT", help="write the JSON report here")
    p.add_argument("--html", metavar="REPORT", help="write the HTML report (memory over time, cells) here")
    p.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="set a variable of the cell tagged 'parameters' (papermill-style; repeatable)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing; the exit code says how it went")
    p.set_defaults(func=_run)
