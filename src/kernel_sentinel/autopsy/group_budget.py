"""``%sentinel budget SIZE`` for a kernel in its own memory group: move the group's limit live, the guard along.

The guard's budget then follows at once (``Guard.set_budget`` re-reads the limits; the guard also re-reads
them on its own at every refresh, so a limit moved from outside is followed too: its configured budget is
``100%`` of what the kernel is allowed). Without a group of its own, ``%sentinel budget`` stays the guard's budget
alone (``guard/magics.py``). Also here: the one line ``%sentinel`` shows about the kernel's group, and the
hint a MemoryBudgetError adds when the machine could give this kernel more (``room_evidence`` measures,
``kernel_group.more_room_fact`` is pure).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..sizes import SizeError, format_bytes, parse_size
from .kernel_group import ENV_GROUP, ENV_LIMIT, GroupError, describe_source, move_limit, own_group, parent_room_bytes, refusal


def group_line(env: dict[str, str] | None = None) -> str | None:
    """Return what ``%sentinel`` says about the kernel's own memory group (None when none was asked for)."""
    env = os.environ if env is None else env
    text = env.get(ENV_GROUP, "")
    if not text:
        if (env.get(ENV_LIMIT) or "").strip():  # asked for, but no supervisor decided (macOS, Windows, no /proc)
            return (
                "Memory group: none of its own (no kernel-sentinel supervisor started this kernel); the guard's "
                "budget alone holds this kernel."
            )
        return None
    mechanism, _, rest = text.partition("|")
    detail = rest.partition("|")[2]
    if mechanism == "none":
        why = detail.removeprefix("no memory group of its own: ")  # the supervisor's log line starts so; said once here
        return f"Memory group: none of its own ({why}); the guard's budget alone holds this kernel."
    group = own_group()
    if group is None:
        return f"Memory group: {mechanism} {detail} was made for this kernel, but the kernel is not in it."
    limit, usage = group.limit_bytes(), group.held_bytes()
    return (
        f"Memory group: this kernel's own ({group.describe()}), limit {format_bytes(limit)}, "
        f"holding {format_bytes(usage)}; `%sentinel budget SIZE` moves it."
    )


def parent_budget_bytes() -> int | None:
    """Return what the machine allows above the kernel's own group: a percentage is a share of this."""
    from ..memory import snapshot

    limits = [lim.limit_bytes for lim in snapshot(rlimits=False).limits if not describe_source(lim.source)]
    return min(limits) if limits else None


def group_budget(magics: Any, args: list[str], guard: Any) -> bool:
    """Handle ``%sentinel budget ...`` when the kernel has a group of its own; return False to leave it to the guard.

    Going down, the guard's budget moves first (so its fence shrinks before the group does); going up, the
    group first. A refusal (below what the kernel holds, more than the parent has free, the OS's EBUSY) is
    one line and changes nothing.
    """
    group = own_group()
    if group is None or len(args) != 1:
        return False
    word = args[0]
    original = os.environ.get(ENV_GROUP, "").split("|")[1:2]
    if word in ("reset", "default"):
        if not original or not original[0].isdigit():
            return False
        requested, label = int(original[0]), f"back to {format_bytes(int(original[0]))}"
    else:
        try:
            requested = parse_size(word, of=parent_budget_bytes())
        except SizeError as exc:
            print(f"%sentinel budget: {exc}")
            return True
        label = word
    old = group.limit_bytes()
    problem = refusal(group, requested)
    if problem:
        print(f"%sentinel budget: {problem}.")
        return True
    going_down = old is not None and requested < old
    if going_down and guard is not None:
        guard.set_budget(requested, f"%sentinel budget {word}")
    try:
        move_limit(group, requested)
    except GroupError as exc:  # the OS refused (v1: EBUSY, the kernel could not be brought under it)
        if going_down and guard is not None:
            guard.set_budget(None)  # the group kept its limit: the guard follows it again
        print(f"%sentinel budget: {exc}.")
        return True
    if guard is not None:
        guard.set_budget(None)  # back to "100%" of what the kernel is allowed: the group's new limit, re-read now
    print(
        f"Budget: {format_bytes(requested)} ({label}), set by {describe_source(group.describe())}; "
        f"it was {format_bytes(old)}."
    )
    return True


# -- the MemoryBudgetError's "the machine could give more" ----------------------------------------------


def room_evidence() -> dict[str, Any]:
    """Return what a MemoryBudgetError's explanation needs to offer more memory: {} outside a group of its own."""
    group = own_group()
    if group is None:
        return {}
    try:
        from ..memory import snapshot

        room, _ = parent_room_bytes()
        machine = snapshot(rlimits=False)
        ram = next((lim.available_bytes for lim in machine.limits if lim.kind == "system RAM"), None)
    except Exception:
        return {}
    return {"group_limit_bytes": group.limit_bytes(), "group_room_bytes": room, "machine_available_bytes": ram}


# -- registration ---------------------------------------------------------------------------------------


def register() -> None:
    """Wrap ``%sentinel budget`` and the bare ``%sentinel`` so that they know the kernel's own group.

    Called by the extension after the guard registered its subcommands: ``budget`` moves the group when
    there is one and is the guard's own otherwise; ``%sentinel`` adds one line about the group.
    """
    try:
        from ..guard import get_guard
        from ..magics import SUBCOMMANDS, register_subcommand
    except ImportError as exc:  # the guard's magics could not load: %sentinel budget stays whatever it is
        print(f"kernel-sentinel: %sentinel budget cannot move this kernel's memory group: {exc}")
        return

    budget, status = SUBCOMMANDS.get("budget"), SUBCOMMANDS.get("")
    if budget is not None and getattr(budget[0], "kernel_group", False):
        return  # wrapped already (the extension loaded twice)

    def budget_command(magics: Any, args: list[str]) -> None:
        if not group_budget(magics, args, get_guard(magics.shell)) and budget is not None:
            budget[0](magics, args)

    def status_command(magics: Any, args: list[str]) -> None:
        if status is not None:
            status[0](magics, args)
        line = None if args else group_line()
        if line:
            print(line)

    if not os.environ.get(ENV_GROUP) and os.environ.get(ENV_LIMIT, "").strip():
        print(f"kernel-sentinel: {group_line()}", file=sys.stderr)  # said once, where no supervisor said it
    budget_command.kernel_group = True  # type: ignore[attr-defined]
    register_subcommand("budget", budget_command, budget[1] if budget else "budget [SIZE|reset]")
    if status is not None:
        register_subcommand("", status_command, status[1])
