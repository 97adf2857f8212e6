"""What a failed cell's traceback shows of a runaway recursion, and mending what CPython 3.11 breaks there.

Since 3.11 Python frames live on the heap, so a recursion under a raised ``sys.setrecursionlimit`` is a
memory loop. The watchdog interrupts it (``watchdog.SigintRouter`` notes its depth); when the fence
refuses memory first, two things can reach the cell instead:

- a ``MemoryError`` from an object the recursion allocates (its ints, its lists): an ordinary refusal, whose
  traceback tells how deep the recursion went;
- CPython 3.11's refused *frame*: it returns NULL without setting an exception (later versions raise
  ``MemoryError`` there), so the cell ends with "SystemError: error return without exception set", and a
  reference to the recursing function has been released once too often on the way (measured on 3.11.7: the
  function object is freed while the namespace still names it, and the kernel segfaults at the next cell,
  or when the function is looked up). ``mend_lost_reference`` gives the recursion's functions that reference
  back before the traceback, which still holds every frame, is let go.
"""

from __future__ import annotations

import ctypes
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

RECURSION_FRAMES = 2000  # deeper than this in one function is a recursion, not a program's call chain
CYCLE_FRAMES = 64  # the innermost frames searched for the functions the recursion cycles through
LOST_FRAME_MESSAGE = "error return without exception set"


@dataclass(frozen=True)
class Recursion:
    """How deep a recursion went: the traceback's length and its innermost frame (function, file, line)."""

    depth: int
    function: str
    file: str
    line: int


def recurses(codes: Sequence[Any], code: Any = None) -> bool:
    """Return True when a stack's innermost frames' code objects are a runaway recursion's: the one test of it.

    ``codes``: at most the innermost ``RECURSION_FRAMES``; a recursion fills them, with one function (``code``, the
    innermost frame's, when given; any one otherwise) in half of them. The watchdog asks it of the running stack
    (``Guard._main_recurses``), the error handler of a failed cell's traceback (``recursion_of``).
    """
    if len(codes) < RECURSION_FRAMES:
        return False
    most = codes.count(code) if code is not None else max(Counter(codes).values())
    return most * 2 >= len(codes)


def recursion_of(tb: TracebackType | None) -> Recursion | None:
    """Return the recursion a traceback ends in, or None: the evidence of a recursion the fence stopped.

    A recursion: ``RECURSION_FRAMES`` deep or more, with the innermost frame's function in half of the
    innermost ``RECURSION_FRAMES`` (``recurses``).
    """
    codes: deque[Any] = deque(maxlen=RECURSION_FRAMES)
    depth, last = 0, tb
    while tb is not None:
        codes.append(tb.tb_frame.f_code)
        depth += 1
        last = tb
        tb = tb.tb_next
    if last is None:
        return None
    code = last.tb_frame.f_code
    if not recurses(codes, code):
        return None
    return Recursion(depth, code.co_name, code.co_filename, last.tb_lineno)


def refused_frame(value: BaseException, tb: TracebackType | None) -> Recursion | None:
    """Return the recursion when ``value`` is CPython 3.11's error for a frame the fence refused, else None.

    Only at the bottom of a recursion is that message taken for the fence: elsewhere it is a C extension's bug.
    """
    if type(value) is not SystemError or str(value) != LOST_FRAME_MESSAGE:
        return None
    return recursion_of(tb)


def mend_lost_reference(tb: TracebackType | None) -> int:
    """Add one reference to each function the recursion's innermost frames run; return how many were found.

    CPython 3.11 releases one reference too many to a function whose frame it could not allocate (the
    function called at the bottom: the recursing function itself, or in ``g -> h -> g`` either one). Which
    one is not told, so each of the cycle's functions gets one: one that lost none is kept alive for good
    (with what it holds: its defaults and closure), one that lost it is not freed while the namespace still
    names it.
    Functions are found as ``_function_of`` finds them (README, Known gaps: the ones it cannot find).
    """
    frames: deque[Any] = deque(maxlen=CYCLE_FRAMES)
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    found: dict[int, Any] = {}
    for frame in frames:
        function = _function_of(frame)
        if function is not None:
            found[id(function)] = function
    del frames
    for function in found.values():
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(function))
    return len(found)


def _function_of(frame: Any) -> Any:
    """Return the function object running ``frame``, or None where it cannot be found without a heap walk.

    By its name in the frame's globals (a cell's function), in its own locals (a closure that calls itself
    names itself as a free variable), on its first argument's class (a method), else any global bound to it
    (a lambda, an alias). A function reached only through a container or an object is not found.
    """
    code = frame.f_code
    name = code.co_name
    candidates = [frame.f_globals.get(name), frame.f_locals.get(name)]
    if code.co_argcount:
        owner = frame.f_locals.get(code.co_varnames[0])
        if owner is not None:
            method = getattr(type(owner), name, None)
            candidates.append(getattr(method, "__func__", method))  # a classmethod's function too
    for function in candidates:
        if getattr(function, "__code__", None) is code:
            return function
    for function in list(frame.f_globals.values()):
        if getattr(function, "__code__", None) is code:
            return function
    return None
