"""The guard's settings: traitlets config (ipython_config.py, kernelspec argv) and environment variables.

``SentinelGuard`` is the traitlets ``Configurable``; every option can be set as
``--SentinelGuard.memory_limit=2G`` in a kernelspec's argv, as ``c.SentinelGuard.memory_limit = "2G"``
in ``ipython_config.py``/``ipython_kernel_config.py``, or through an environment variable:

==========================  ==================================  =========  =======================================
trait                       environment variable                default    meaning
==========================  ==================================  =========  =======================================
``enabled``                 ``KERNEL_SENTINEL_GUARD`` (0/1)     True       ``0`` turns the guard off
``memory_limit``            ``KERNEL_SENTINEL_MEMORY_LIMIT``    ""         SIZE (``2G``, ``80%`` of the machine's
                                                                           budget): the budget when tighter than
                                                                           what the machine says
``poll_interval``           ``KERNEL_SENTINEL_POLL_INTERVAL``   0.01       seconds between watchdog ticks
``interrupt_fraction``      ``KERNEL_SENTINEL_INTERRUPT_AT``    1.0        interrupt the cell at this share of
                                                                           the budget at the latest (1.0: only
                                                                           the line that follows growth)
``reserve_bytes``           ``KERNEL_SENTINEL_RESERVE``         64M        most the fence keeps from the budget
                                                                           (it keeps ~1.5%, at least 24 MiB)
``error_reserve_bytes``     ``KERNEL_SENTINEL_ERROR_RESERVE``   0          resident memory held back for the error
                                                                           path, only in a memory cgroup with a
                                                                           limit (0: the fence's margin is its room)
``child_oom_score_adj``     ``KERNEL_SENTINEL_CHILD_OOM_SCORE``  1000      oom_score_adj for child processes
==========================  ==================================  =========  =======================================

Precedence: ``KERNEL_SENTINEL_GUARD=0`` always wins (it is the off switch); otherwise a value set through
traitlets wins over the environment, which wins over the default. Both memory limits, when given, count:
the tighter one is the budget. A bad value is reported in one line and the default is used instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import Configurable

from ..sizes import SizeError, parse_size

MiB = 1 << 20


class SentinelGuard(Configurable):
    """Configuration of kernel-sentinel's memory guard (the fence and the watchdog)."""

    enabled = Bool(True, help="Turn the memory guard on (KERNEL_SENTINEL_GUARD=0 turns it off).").tag(config=True)
    memory_limit = Unicode(
        "",
        help="The kernel's memory budget when tighter than what the machine says: a SIZE such as 2G, "
        "or a share of the machine's budget such as 80%. Empty: the machine's budget.",
    ).tag(config=True)
    poll_interval = Float(0.01, help="Seconds between two watchdog readings.").tag(config=True)
    interrupt_fraction = Float(
        1.0,
        help="Interrupt the running cell at this share of the budget at the latest; 1.0 leaves only the line "
        "that follows the growth rate and the watchdog's reaction time.",
    ).tag(config=True)
    reserve_bytes = Integer(
        64 * MiB,
        help="Most bytes the fence keeps free below the budget (it keeps ~1.5% of it, at least 24 MiB).",
    ).tag(config=True)
    error_reserve_bytes = Integer(
        0,
        help="Resident bytes held back (only in a memory cgroup with a limit) and released when a cell fails, so "
        "the error can be shown; 0: the error path's room is the fence's margin.",
    ).tag(config=True)
    child_oom_score_adj = Integer(
        1000, help="oom_score_adj given to the kernel's child processes, so they die before the kernel."
    ).tag(config=True)


@dataclass(frozen=True)
class MemoryLimitSetting:
    """A memory limit as the user wrote it, and where it was written (shown as the budget's source)."""

    text: str
    source: str

    def resolve(self, machine_budget: int | None) -> int:
        """Return the limit in bytes; a percentage is a share of the machine's budget."""
        return parse_size(self.text, of=machine_budget)


@dataclass(frozen=True)
class GuardSettings:
    """The guard's resolved settings, plus one-line warnings about values that could not be used."""

    enabled: bool = True
    memory_limits: tuple[MemoryLimitSetting, ...] = ()
    poll_interval: float = 0.01
    interrupt_fraction: float = 1.0
    reserve_bytes: int = 64 * MiB
    error_reserve_bytes: int = 0  # none resident: the fence's margin is the error path's room (controller._take_reserve)
    child_oom_score_adj: int = 1000
    warnings: tuple[str, ...] = field(default=())


_ENV = {
    "poll_interval": "KERNEL_SENTINEL_POLL_INTERVAL",
    "interrupt_fraction": "KERNEL_SENTINEL_INTERRUPT_AT",
    "reserve_bytes": "KERNEL_SENTINEL_RESERVE",
    "error_reserve_bytes": "KERNEL_SENTINEL_ERROR_RESERVE",
    "child_oom_score_adj": "KERNEL_SENTINEL_CHILD_OOM_SCORE",
}


def resolve_settings(config: SentinelGuard | None = None, env: Mapping[str, str] | None = None) -> GuardSettings:
    """Return the settings from traitlets ``config`` and ``env``: a pure merge, so it is testable as such."""
    env = os.environ if env is None else env
    config = config if config is not None else SentinelGuard()
    explicit = _explicitly_set(config)
    warnings: list[str] = []
    defaults = GuardSettings()
    values: dict[str, Any] = {}

    switch = env.get("KERNEL_SENTINEL_GUARD", "").strip().lower()
    enabled = bool(config.enabled)
    if switch in ("0", "false", "no", "off"):
        enabled = False
    elif switch in ("1", "true", "yes", "on", ""):
        pass
    else:
        warnings.append(f"KERNEL_SENTINEL_GUARD={switch!r} is not 0 or 1; the guard stays {'on' if enabled else 'off'}")
    values["enabled"] = enabled

    limits = []
    env_limit = env.get("KERNEL_SENTINEL_MEMORY_LIMIT", "").strip()
    for text, source in (
        (env_limit, "KERNEL_SENTINEL_MEMORY_LIMIT"),
        (str(config.memory_limit).strip(), "SentinelGuard.memory_limit"),
    ):
        if not text:
            continue
        try:
            parse_size(text, of=1 << 40)  # validates; a percentage is resolved against the budget later
        except SizeError as exc:
            warnings.append(f"{source}: {exc}; ignored")
            continue
        limits.append(MemoryLimitSetting(text, source))
    values["memory_limits"] = tuple(limits)

    for name, var in _ENV.items():
        default = getattr(defaults, name)
        value = getattr(config, name) if name in explicit else default
        if name not in explicit and env.get(var, "").strip():
            try:
                value = _parse_env(name, env[var].strip())
            except (ValueError, SizeError) as exc:
                warnings.append(f"{var}={env[var]!r}: {exc}; using {default}")
                value = default
        problem = _check(name, value)
        if problem:
            warnings.append(f"{name}={value!r}: {problem}; using {default}")
            value = default
        values[name] = value
    return GuardSettings(**values, warnings=tuple(warnings))


def _explicitly_set(config: SentinelGuard) -> set[str]:
    """Return the names of traits given through traitlets config (not left at their defaults)."""
    try:
        section = config.config.get("SentinelGuard", {})
        return {str(k) for k in section}
    except Exception:  # a Config that cannot be read is the same as none
        return set()


def _parse_env(name: str, text: str) -> Any:
    if name in ("reserve_bytes", "error_reserve_bytes"):
        try:
            return parse_size(text)
        except SizeError:
            if text.rstrip("KMGTkmgt") == "0":  # off: allowed here, unlike a memory limit
                return 0
            raise
    if name == "child_oom_score_adj":
        return int(text)
    return float(text)


def _check(name: str, value: Any) -> str | None:
    """Return why ``value`` cannot be used for ``name``, or None when it can."""
    if name == "poll_interval" and not 0.001 <= float(value) <= 5:
        return "must be between 0.001 and 5 seconds"
    if name == "interrupt_fraction" and not 0.3 <= float(value) <= 1:
        return "must be in [0.3, 1]"
    if name in ("reserve_bytes", "error_reserve_bytes") and not 0 <= int(value) <= (1 << 34):
        return "must be between 0 and 16G"
    if name == "child_oom_score_adj" and not -1000 <= int(value) <= 1000:
        return "must be between -1000 and 1000"
    return None
