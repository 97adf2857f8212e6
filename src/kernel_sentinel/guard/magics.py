"""``%sentinel``: the guard's controls in a notebook.

``%sentinel`` shows the budget, usage and what holds memory; ``%sentinel budget 4G|80%`` sets the budget;
``%sentinel free`` drops hidden references and returns memory to the OS; ``%sentinel off|on``.
These register in ``kernel_sentinel.magics``, the registry every part adds its subcommands to
(``register_subcommand`` is re-exported here). Bad input prints one line of usage, never a traceback.
"""

from __future__ import annotations

import html
from typing import Any

from ..magics import SUBCOMMANDS, SentinelMagics, Subcommand, register_subcommand, usage_line  # noqa: F401  (the registry; re-exported)
from ..sizes import SizeError, format_bytes, parse_size
from .explain import short_source


def _get_guard(ip: Any) -> Any:
    """Return the running Guard, or None when the guard is not loaded (or not built yet)."""
    try:
        from . import get_guard  # type: ignore[attr-defined]
    except ImportError:
        try:
            from .core import get_guard  # type: ignore[no-redef]
        except ImportError:
            return None
    try:
        return get_guard(ip)
    except Exception:
        return None


_NOT_LOADED = "The guard is not loaded in this kernel: run `%load_ext kernel_sentinel` first."


def machine_budget_bytes() -> int | None:
    """Return what the machine allows this process (cgroup, RAM), leaving out the guard's own fence (an rlimit)."""
    from ..memory import snapshot

    return snapshot(rlimits=False).budget_bytes


# --- status --------------------------------------------------------------------------------------------


def status_bundle(ip: Any, n: int = 5) -> dict[str, str]:
    """Return ``%sentinel``'s output as a mime bundle: budget, usage, the largest variables, hidden references."""
    from ..memory import snapshot
    from .namespace import namespace_report

    guard = _get_guard(ip)
    snap = None
    if guard is not None:
        try:
            snap = guard.snapshot()
        except Exception:
            snap = None
    if snap is None:
        snap = snapshot(rlimits=False)
    if guard is not None:
        state = "on" if getattr(guard, "enabled", False) else "off"
        budget, source = getattr(guard, "budget_bytes", None), getattr(guard, "budget_source", None)
    else:
        state, budget, source = "not loaded", snap.budget_bytes, snap.source
    rss = snap.process.rss_bytes
    working_set = snap.cgroup.working_set_bytes if snap.cgroup else None
    report = namespace_report(ip, n=n)

    lines = [f"Guard: {state}. Budget: {format_bytes(budget)}, set by {short_source(source)}."]
    usage = f"Kernel RSS: {format_bytes(rss)}"
    if working_set is not None:
        usage += f"; its memory cgroup uses {format_bytes(working_set)} (working set)"
    lines.append(usage + ".")
    rows = []
    for v in report.variables:
        approx = "" if v.exact else "~"
        rows.append((v.name, f"{approx}{format_bytes(v.nbytes)}", f"{v.type_name} {v.detail}".strip()))
    for h in report.hidden:
        if h.exclusive_bytes < 1 << 20:
            continue  # a bool in Out, or objects a variable (or Out itself) holds anyway: not worth a line
        rows.append((f"{h.name} (hidden)", format_bytes(h.nbytes), f"{format_bytes(h.exclusive_bytes)} only there: {h.holds}"))
    tail = []
    if not rows:
        tail.append("No user variables hold notable memory.")
    if report.hidden_exclusive_bytes >= 1 << 20:
        tail.append(f"`%sentinel free` would drop {format_bytes(report.hidden_exclusive_bytes)} of hidden references.")
    text = list(lines)
    if rows:
        width = max(len(r[0]) for r in rows)
        text.append("Largest:")
        text += [f"  {name:<{width}}  {size:>10}  {what}" for name, size, what in rows]
    text += tail
    e = html.escape
    table = "".join(
        f"<tr><td><code>{e(a)}</code></td><td style='text-align:right'>{e(b)}</td><td>{e(c)}</td></tr>" for a, b, c in rows
    )
    html_text = (
        "<div class='kernel-sentinel-status' style='font-family:sans-serif;font-size:13px'>"
        + "".join(f"<div>{e(line)}</div>" for line in lines)
        + (f"<table style='border-collapse:collapse'><tr><th>name</th><th>size</th><th></th></tr>{table}</table>" if rows else "")
        + "".join(f"<div>{e(line)}</div>" for line in tail)
        + "</div>"
    )
    return {"text/plain": "\n".join(text), "text/html": html_text}


def _status(self: SentinelMagics, args: list[str]) -> None:
    from IPython.display import display

    if args:
        print(usage_line())
        return
    display(status_bundle(self.shell), raw=True)


def _budget(self: SentinelMagics, args: list[str]) -> None:
    guard = _get_guard(self.shell)
    if len(args) > 1:
        print("usage: %sentinel budget [SIZE | reset]   (SIZE like 4G, 512M, 80%)")
        return
    if guard is None:
        print(_NOT_LOADED)
        return
    if not args:
        print(f"Budget: {format_bytes(guard.budget_bytes)}, set by {short_source(guard.budget_source)}.")
        return
    if args[0] in ("reset", "default"):
        guard.set_budget(None)
        print(f"Budget: {format_bytes(guard.budget_bytes)}, set by {short_source(guard.budget_source)}.")
        return
    machine = machine_budget_bytes()
    try:
        nbytes = parse_size(args[0], of=machine)
    except SizeError as exc:
        print(f"%sentinel budget: {exc}")
        return
    usage = getattr(guard, "usage_bytes", None)
    if isinstance(usage, int) and nbytes <= usage:
        # Below what is already in use, the fence would refuse every allocation, in every thread (even
        # the one that sends output): refuse instead, and say what to do.
        print(
            f"%sentinel budget: {args[0]} is less than the {format_bytes(usage)} this kernel already uses; "
            "free memory first (`%sentinel free`, `del` a big variable)."
        )
        return
    guard.set_budget(nbytes, f"%sentinel budget {args[0]}")
    line = f"Budget: {format_bytes(guard.budget_bytes)}, set by {short_source(guard.budget_source)}."
    if machine is not None and nbytes > machine:
        line += f" ({args[0]} is more than the {format_bytes(machine)} the machine allows: that limit stays.)"
    print(line)


def _free(self: SentinelMagics, args: list[str]) -> None:
    from .reclaim import free_hidden

    if args:
        print("usage: %sentinel free")
        return
    print(free_hidden(self.shell).text())


def _switch(on: bool) -> Subcommand:
    def switch(self: SentinelMagics, args: list[str]) -> None:
        guard = _get_guard(self.shell)
        if args:
            print(f"usage: %sentinel {'on' if on else 'off'}")
            return
        if guard is None:
            print(_NOT_LOADED)
            return
        if on:
            guard.enable()
            print(f"Guard on. Budget: {format_bytes(guard.budget_bytes)}, set by {short_source(guard.budget_source)}.")
        else:
            guard.disable()
            print("Guard off: a cell that runs out of memory can get the kernel killed again. `%sentinel on` to undo.")

    return switch


register_subcommand("", _status, "")
register_subcommand("budget", _budget, "budget [SIZE|reset]")
register_subcommand("free", _free, "free")
register_subcommand("on", _switch(True), "on")
register_subcommand("off", _switch(False), "off")
