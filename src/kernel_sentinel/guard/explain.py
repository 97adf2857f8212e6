"""Why a cell ran out of memory, and the one thing to do about it: a pure function of the guard's evidence.

The guard's core records what happened (``evidence``: trigger, what was asked for, budget and its source,
usage, the cell's code); ``namespace.namespace_report`` says what holds memory. ``explain_memory_error``
turns both into a few short lines and ONE remedy chosen for the case, so that a user reads it in ten
seconds. No I/O here: tests feed it evidence captured from real failures.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..sizes import format_bytes
from .children import child_words
from .namespace import HiddenRef, NamespaceReport, VariableSize

_MiB = 1 << 20
_SHOWN_VARIABLES = 3
_NOTABLE = _MiB  # variables and hidden references smaller than this are not worth a line

_READ_CSV = re.compile(r"\bread_(csv|table|fwf)\s*\(")
_READ_OTHER = re.compile(r"\bread_(json|parquet|excel|sql|feather|hdf|pickle)\s*\(")
_MERGE = re.compile(r"(\.|\bpd\.)merge\s*\(|\.join\s*\([^)]*\b(on|how|left_on)\s*=")  # not Thread.join()
_NUMPY_ALLOC = re.compile(
    r"\b(np|numpy)\.(ones|zeros|empty|full|random\.\w+|arange|eye|identity|tile|repeat|outer|meshgrid)\s*\("
)
_INT_DTYPE = re.compile(r"dtype\s*=\s*(np\.|numpy\.)?['\"]?(u?int64|int\b|u?int)")
_GROWTH = re.compile(r"\.(append|extend)\s*\(|\bwhile\s+True\b|\+=")


@dataclass(frozen=True)
class MemoryExplanation:
    """What the user reads when the guard stops a cell: a headline, a few facts, what holds memory, one remedy."""

    headline: str
    facts: list[str]
    top_variables: list[VariableSize]
    hidden: list[HiddenRef]
    remedy: str
    remedy_kind: str = "generic"  # chunked_read | free_hidden | merge_keys | smaller_dtype | memmap | del | ...
    cell: int | None = None
    budget_bytes: int | None = None
    budget_source: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (flight records, ``--json`` outputs)."""
        data = asdict(self)
        return data


def _cell_name(cell: Any) -> str:
    return f"Cell [{cell}]" if isinstance(cell, int) else "This cell"


def _usage(ev: dict[str, Any]) -> int | None:
    for key in ("usage_bytes", "working_set_bytes", "rss_bytes"):
        value = ev.get(key)
        if isinstance(value, int) and value >= 0:
            return value
    return None


def _unfilled(ev: dict[str, Any]) -> int:
    """Return what the kernel had allocated but not yet filled: no usage yet, but the fence counts it (it will be)."""
    value = ev.get("unfilled_bytes")
    return value if isinstance(value, int) and value > 0 else 0


def _taken(ev: dict[str, Any]) -> int | None:
    usage = _usage(ev)
    return usage + _unfilled(ev) if usage is not None else None


def _available(ev: dict[str, Any]) -> int | None:
    value = ev.get("available_bytes")
    if isinstance(value, int):
        return max(value, 0)
    budget, usage = ev.get("budget_bytes"), _taken(ev)
    if isinstance(budget, int) and usage is not None:
        return max(budget - usage, 0)
    return None


def _room(ev: dict[str, Any]) -> int | None:
    """Return how much more the cell could have used before the guard steps in (its interrupt level)."""
    usage = _taken(ev)
    level = ev.get("interrupt_at_bytes")
    budget = ev.get("budget_bytes")
    if not isinstance(level, int) and isinstance(budget, int):
        level = int(budget * 0.9)
    if isinstance(level, int) and usage is not None:
        return max(level - usage, 0)
    return _available(ev)


def _peak(ev: dict[str, Any]) -> int | None:
    for key in ("usage_at_interrupt_bytes", "peak_usage_bytes"):
        value = ev.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return _usage(ev)


def _recursion(ev: dict[str, Any]) -> tuple[str, int] | None:
    """Return (function, depth) when the guard stopped a runaway recursion, else None."""
    depth, fn = ev.get("recursion_depth"), ev.get("recursion_function")
    if isinstance(depth, int) and depth > 0 and isinstance(fn, str) and fn:
        return fn, depth
    return None


def short_source(source: str | None) -> str:
    """Return the budget's source for a ten-second read: a cgroup's long path cut to its last part."""
    if not source:
        return "unknown"
    from ..autopsy.kernel_group import describe_source

    if describe_source(source):
        return describe_source(source)  # "this kernel's own memory group (cgroup v1 .../ks-kernel-...)"
    if source.startswith("cgroup") and source.count("/") > 2:
        head, _, path = source.partition(" /")
        head = head if head.startswith("cgroup v") else source.split(" /")[0]
        return f"the memory cgroup's limit ({head} .../{path.rstrip('/').rsplit('/', 1)[-1]})"
    if source.startswith("cgroup"):
        return f"the memory cgroup's limit ({source})"
    return source


_HOLDS = {"Out": "old outputs", "_ / __ / ___": "the last outputs", "last traceback": "a failed cell's locals"}


def _mentions(code: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}\b", code) is not None


# Each library's own way to do the same work in less memory (also used by the autopsy's remedies).
LIBRARY_REMEDIES = {
    "polars": (
        "polars_streaming",
        "Let polars stream it: build the query lazily (`pl.scan_csv`/`pl.scan_parquet` or `df.lazy()`) and run "
        "it with `.collect(engine='streaming')`, or `.sink_parquet('out.parquet')` when the result itself is too "
        "big; filter and select columns before a join.",
    ),
    "duckdb": (
        "duckdb_spill",
        "Keep the work inside duckdb: aggregate or filter in SQL and fetch only the result, fetch big results in "
        "batches (`.fetch_record_batch()` / `fetchmany`), or write them out with `COPY (...) TO 'out.parquet'`; "
        "duckdb spills to disk within `SET memory_limit` (set from the budget) and `SET temp_directory`.",
    ),
    "pandas": (
        "chunked_read",
        "Read the file in pieces: `for chunk in pd.read_csv(path, chunksize=1_000_000): ...` "
        "(reduce each chunk, keep only the result), or load less with `usecols=[...]` and "
        "`dtype={'col': 'float32'}`.",
    ),
    "pyarrow": (
        "arrow_batches",
        "Process it in record batches (`pyarrow.parquet.ParquetFile(path).iter_batches()`, "
        "`dataset.to_batches()`) instead of combining everything into one table.",
    ),
    "zmq": (
        "smaller_outputs",
        "Display or send less at once: the kernel's messaging library (libzmq) aborts when it cannot allocate; "
        "show a summary (`df.head()`) instead of a huge output, and keep memory below the budget.",
    ),
}


def library_remedy(library: str | None) -> tuple[str, str] | None:
    """Return ``(kind, text)``: the library's own remedy for running out of memory, None for others."""
    if not library:
        return None
    key = library.split("'")[0].split()[0].lower()
    return LIBRARY_REMEDIES.get(key)


def _remedy(ev: dict[str, Any], report: NamespaceReport | None) -> tuple[str, str]:
    """Return ``(kind, text)``: the single remedy most likely to let this cell run."""
    code = ev.get("code") or ""
    own = library_remedy(ev.get("library"))
    if own is not None:
        return own
    if _recursion(ev):
        return "recursion", (
            "Give the recursion a case that ends it, or write it as a loop: with the recursion limit raised "
            "(`sys.setrecursionlimit`), each call keeps a frame in memory until the whole chain returns."
        )
    if isinstance(ev.get("child"), dict):
        return "child", (
            "Give the child less at once: process the data in chunks, or use fewer workers "
            "(`Pool(processes=1)`, `n_jobs=1`): each worker holds its own copy of what it works on."
        )
    budget = ev.get("budget_bytes") if isinstance(ev.get("budget_bytes"), int) else None
    requested = ev.get("requested_bytes") if isinstance(ev.get("requested_bytes"), int) else None
    available = _room(ev)
    need = requested - available if requested is not None and available is not None else None
    bigger_than_budget = requested is not None and budget is not None and requested > budget
    hidden_free = report.hidden_exclusive_bytes if report else 0
    floor = max(need or 0, (budget or 0) // 5, 16 * _MiB)

    if _READ_CSV.search(code):
        return LIBRARY_REMEDIES["pandas"]
    if hidden_free >= floor and not bigger_than_budget:
        holders = [h for h in (report.hidden if report else ()) if h.exclusive_bytes >= _NOTABLE][:2]
        what = " and ".join(f"{h.name} ({_HOLDS.get(h.name, 'hidden')})" for h in holders) or "hidden references"
        verb = "holds" if len(holders) == 1 else "hold"
        return "free_hidden", (
            f"Run `%sentinel free`: {what} {verb} {format_bytes(hidden_free)} that no variable of yours "
            "uses. Then run the cell again."
        )
    if _MERGE.search(code):
        return "merge_keys", (
            "Check the join keys: keys repeated on both sides multiply the rows. "
            "`left[key].value_counts().head()` shows them; `validate='many_to_one'` stops it early."
        )
    if _READ_OTHER.search(code):
        return "chunked_read", (
            "Load less: pass `columns=[...]` (or `usecols=`) and narrower dtypes, or read it in batches "
            "(`pyarrow.parquet.ParquetFile(path).iter_batches()`, `read_json(..., lines=True, chunksize=...)`)."
        )
    if requested is not None and requested >= 16 * _MiB:
        is_numpy = _NUMPY_ALLOC.search(code) is not None or "np." in code
        if is_numpy and available is not None and requested // 2 <= available:
            small = "np.int32" if _INT_DTYPE.search(code) else "np.float32"
            return "smaller_dtype", (
                f"Use a smaller dtype: `dtype={small}` halves it to {format_bytes(requested // 2)}, "
                f"which fits in the {format_bytes(available)} still free."
            )
        if is_numpy:
            return "memmap", (
                f"Keep it on disk: `np.memmap('big.dat', dtype=..., mode='w+', shape=...)`. It needs "
                f"{format_bytes(requested)} of free disk there: check `shutil.disk_usage('.').free` first, "
                "a memmap on a full disk kills the kernel (SIGBUS)."
            )
    if report is not None:
        for var in report.variables:
            if var.nbytes < max(need or 0, (budget or 0) // 5, 16 * _MiB):
                break
            if not _mentions(code, var.name):
                return "del", (
                    f"`del {var.name}` frees {format_bytes(var.nbytes)} ({var.type_name}), "
                    "if you no longer need it; then run the cell again."
                )
    if requested is not None and bigger_than_budget:
        return "split", (
            f"Build it in pieces: {format_bytes(requested)} at once is more than the whole budget; "
            "or keep it on disk (a file, `np.memmap`, Parquet)."
        )
    if hidden_free >= 16 * _MiB:
        return "free_hidden", (
            f"Run `%sentinel free`: it drops {format_bytes(hidden_free)} of old outputs and tracebacks; "
            "then process the data in smaller pieces."
        )
    if ev.get("background") or ev.get("thread"):
        return "background", (
            "Stop or bound the background thread: it keeps growing memory, and its allocations fail with "
            "MemoryError until memory is freed."
        )
    if _GROWTH.search(code):
        return "bounded_growth", (
            "Bound the growth: this cell's data grows without limit; write results to disk in batches "
            "(e.g. every 100,000 items) or keep running totals instead of every item."
        )
    return "generic", (
        "Work in smaller pieces: process the data in chunks, or a sample first; `%sentinel` shows what "
        "holds memory now."
    )


def explain_memory_error(evidence: dict[str, Any], report: NamespaceReport | None) -> MemoryExplanation:
    """Return the short explanation of a memory failure from the guard's ``evidence`` and a namespace report.

    Pure: the same evidence gives the same text, so it is tested on evidence captured from real failures.
    """
    ev = evidence or {}
    cell = ev.get("cell")
    budget = ev.get("budget_bytes") if isinstance(ev.get("budget_bytes"), int) else None
    source = ev.get("budget_source") or None
    requested = ev.get("requested_bytes") if isinstance(ev.get("requested_bytes"), int) else None
    usage = _usage(ev)
    who = _cell_name(cell)
    budget_txt = format_bytes(budget) if budget is not None else "its"

    child = ev.get("child") if isinstance(ev.get("child"), dict) else None
    if child and child.get("killed"):
        size = f" after growing to at least {format_bytes(child.get('rss_bytes'))}" if child.get("rss_bytes") else ""
        headline = (
            f"The OOM killer ended {child_words(child)}{size}: together they ran out of the {budget_txt} memory "
            f"budget. {who} was stopped rather than left waiting forever for it; the kernel and its variables are intact."
        )
    elif child:
        headline = (
            f"{child_words(child)[0].upper()}{child_words(child)[1:]} grew to about "
            f"{format_bytes(child.get('rss_bytes'))} of the {budget_txt} memory budget while {who.lower() if who == 'This cell' else who} "
            "waited for it; the cell was stopped (and with it the child) before the kernel could be killed."
        )
    elif (recursion := _recursion(ev)) is not None:
        fn, depth = recursion
        took = (
            f"took memory use to {format_bytes(_peak(ev))} of the {budget_txt} budget"
            if _peak(ev) is not None
            else f"filled the {budget_txt} budget"
        )
        headline = (
            f"{who} ran into a runaway recursion: {fn}() called itself "
            f"{'at least ' if ev.get('recursion_depth_at_least') else ''}{depth:,} levels deep. Its frames "
            f"{took}; it was stopped before the kernel could be killed."
        )
    elif ev.get("thread"):
        headline = (
            f"A thread of this kernel ({ev['thread']!r}) ran out of the {budget_txt} memory budget "
            f"(memory reached {format_bytes(_peak(ev))}); it stopped with MemoryError, and so did {who.lower() if who == 'This cell' else who}."
        )
    elif ev.get("background"):
        headline = (
            f"Memory grew to {format_bytes(_peak(ev))} of the {budget_txt} budget while no cell was running "
            "(a background thread?); its allocations now fail instead of the kernel being killed."
        )
    elif requested is not None and usage is not None:
        unfilled = _unfilled(ev)
        taken_now = usage + unfilled
        peak = ev.get("peak_usage_bytes")
        if (
            budget is not None
            and isinstance(peak, int)
            and peak > taken_now + 16 * _MiB
            and taken_now + requested <= budget
        ):
            # The failed line's partial results (a generator's DataFrames, a list comprehension's arrays) were
            # freed as the error unwound, before these figures were read: 03.12's refusal read "needed 76.3 MiB,
            # with 182 MiB of the 384 MiB budget in use", which does not add up. The cell's peak does.
            headline = (
                f"{who} needed {format_bytes(requested)} at once, after memory use had reached "
                f"{format_bytes(peak)} of the {budget_txt} budget ({format_bytes(usage)} in use now: what the "
                "failed line had built was freed as it stopped)."
            )
        else:
            # An array allocated and not yet filled is in no usage figure, yet the fence counts it: without it the
            # figures read "needed 179 MiB, 53 MiB of 384 in use" for a refusal that saved the kernel.
            taken = f" and {format_bytes(unfilled)} more allocated but not yet filled" if unfilled >= _MiB else ""
            headline = (
                f"{who} needed {format_bytes(requested)} at once, with {format_bytes(usage)} of the "
                f"{budget_txt} memory budget already in use{taken}."
            )
    elif requested is not None:
        headline = f"{who} needed {format_bytes(requested)} at once: more than the {budget_txt} memory budget allows."
    elif ev.get("trigger") == "watchdog" and _peak(ev) is not None:
        headline = (
            f"{who} grew memory use to {format_bytes(_peak(ev))} of the {budget_txt} budget "
            "and was stopped before the kernel could be killed."
        )
    elif ev.get("trigger") == "fence":
        headline = f"{who} asked for more memory than is left of the {budget_txt} budget; the kernel was kept alive."
    else:
        headline = f"{who} ran out of the {budget_txt} memory budget; the kernel was kept alive."

    facts = []
    if budget is not None:
        facts.append(f"Budget: {format_bytes(budget)}, set by {short_source(source)}.")
    if usage is not None:
        line = f"In use now: {format_bytes(usage)}"
        rss = ev.get("rss_bytes")
        if isinstance(rss, int) and abs(rss - usage) > 16 * _MiB:
            line += f" (the kernel process itself: {format_bytes(rss)})"
        facts.append(line + ".")
    facts.append("The kernel and your other variables are intact.")
    from ..autopsy.kernel_group import more_room_fact

    more = more_room_fact(ev)  # the kernel's own group could get more from the machine: the exact command
    if more:
        facts.append(more)

    top = [v for v in (report.variables if report else ()) if v.nbytes >= _NOTABLE][:_SHOWN_VARIABLES]
    hidden = [h for h in (report.hidden if report else ()) if h.exclusive_bytes >= _NOTABLE]
    kind, remedy = _remedy(ev, report)
    notes = list(report.notes) if report else []
    return MemoryExplanation(
        headline=headline,
        facts=facts,
        top_variables=top,
        hidden=hidden,
        remedy=remedy,
        remedy_kind=kind,
        cell=cell if isinstance(cell, int) else None,
        budget_bytes=budget,
        budget_source=source,
        notes=notes,
    )
