"""The recursion a failed cell's traceback shows, and the reference CPython 3.11 loses at a refused frame.

The refused frame itself is met in a real kernel in a memory cgroup (test_guard_accounting.py's runaway
recursion with a late watchdog); here the pure parts run on real tracebacks of a recursion stopped by the
recursion limit (no memory is exhausted).
"""

from __future__ import annotations

import gc
import sys

from kernel_sentinel.guard.recursion import (
    LOST_FRAME_MESSAGE,
    RECURSION_FRAMES,
    mend_lost_reference,
    recursion_of,
    recurses,
    refused_frame,
)


def _deep(n: int) -> int:
    return _deep(n + 1)


def _ping(n: int) -> int:
    return _pong(n + 1)


def _pong(n: int) -> int:
    return _ping(n + 1)


class _Walker:
    def walk(self, n: int) -> int:
        return self.walk(n + 1)


def _closure():
    def inner(n: int) -> int:
        return inner(n + 1)
    return inner


_INNER = _closure()
_lambda = lambda n: _lambda(n + 1)  # noqa: E731 - a lambda's recursion is what is tested


def _shallow(n: int) -> int:
    if n == 0:
        raise SystemError(LOST_FRAME_MESSAGE)
    return _shallow(n - 1)


def _traceback_of(call, limit: int = 5000):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        call()
    except (RecursionError, SystemError) as exc:
        return exc, exc.__traceback__
    finally:
        sys.setrecursionlimit(old)
    raise AssertionError("no error")


def test_a_recursion_is_told_by_its_depth_and_innermost_function():
    exc, tb = _traceback_of(lambda: _deep(0))
    found = recursion_of(tb)
    assert found is not None and found.function == "_deep" and found.file == __file__
    assert RECURSION_FRAMES <= found.depth <= 5000
    assert found.line == _deep.__code__.co_firstlineno + 1
    # a mutual recursion: the innermost function runs in half of the frames
    exc, tb = _traceback_of(lambda: _ping(0))
    assert recursion_of(tb).function in ("_ping", "_pong")


def _a(n: int) -> int:
    return _b(n + 1)


def _b(n: int) -> int:
    return _c(n + 1)


def _c(n: int) -> int:
    return _a(n + 1)


def _innermost_codes(tb) -> list:
    codes = []
    while tb is not None:
        codes.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    return codes[-RECURSION_FRAMES:]


def test_one_test_tells_a_recursion_for_the_watchdog_and_the_handler():
    # The watchdog asks it of the running stack (any one function), the handler of a traceback (its innermost one).
    codes = _innermost_codes(_traceback_of(lambda: _deep(0))[1])
    assert recurses(codes) and recurses(codes, _deep.__code__)
    assert not recurses(codes, _ping.__code__)
    assert not recurses(codes[:RECURSION_FRAMES - 1])  # not deep enough
    codes = _innermost_codes(_traceback_of(lambda: _ping(0))[1])
    assert recurses(codes) and recurses(codes, _ping.__code__) and recurses(codes, _pong.__code__)
    # three functions in a cycle: none runs in half of the frames
    codes = _innermost_codes(_traceback_of(lambda: _a(0))[1])
    assert len(codes) == RECURSION_FRAMES and not recurses(codes) and not recurses(codes, _a.__code__)


def test_an_ordinary_traceback_is_no_recursion():
    exc, tb = _traceback_of(lambda: _shallow(50))
    assert recursion_of(tb) is None  # 50 frames deep
    assert refused_frame(exc, tb) is None
    assert recursion_of(None) is None


def test_only_the_lost_frame_system_error_at_the_bottom_of_a_recursion_is_the_fences():
    exc, tb = _traceback_of(lambda: _deep(0))
    assert refused_frame(exc, tb) is None  # a RecursionError
    assert refused_frame(SystemError(LOST_FRAME_MESSAGE), tb) == recursion_of(tb)
    assert refused_frame(SystemError("some other failure"), tb) is None
    assert refused_frame(SystemError(LOST_FRAME_MESSAGE), None) is None


def test_the_functions_the_recursion_cycles_through_get_one_reference_back():
    for call, functions in (
        (lambda: _deep(0), [_deep]),
        (lambda: _ping(0), [_ping, _pong]),
        (lambda: _Walker().walk(0), [_Walker.walk]),
        (lambda: _lambda(0), [_lambda]),
        (lambda: _INNER(0), [_INNER]),
    ):
        gc.collect()  # an earlier traceback's frames (a cycle through its test's frame) still hold references
        before = [sys.getrefcount(f) for f in functions]
        exc, tb = _traceback_of(call)
        assert mend_lost_reference(tb) == len(functions)
        del exc, tb
        gc.collect()
        after = [sys.getrefcount(f) for f in functions]
        assert after == [b + 1 for b in before], (functions, before, after)
