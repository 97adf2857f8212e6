"""A native module's load lets its reservations pass the fence until it ends (guard/imports.py): the count of loads
running must never outlive them. An interrupt landing between a load's count and its ``try`` (or in its ``finally``)
left it counted for good, and the fence kept a load's 4 GiB of room for the rest of the kernel's life; a cell's start
on the main thread now ends any load of that thread still counted, and only that thread's.
"""

from __future__ import annotations

import threading

from kernel_sentinel.guard import imports


class Hooks:
    """What the guard's two hooks were called for, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def import_started(self) -> None:
        self.calls.append("started")

    def import_ended(self) -> None:
        self.calls.append("ended")


class Spec:
    origin = "/x/fake_native" + imports._SUFFIXES[0]


def test_a_load_an_interrupt_left_counted_ends_at_the_next_cell_start() -> None:
    hooks = Hooks()
    assert imports._depth.enter()  # the count taken, then the interrupt: no `try` reached, no `finally`
    try:
        imports.main_thread_loads_nothing(hooks)
        assert hooks.calls == ["ended"]
        assert not imports._depth.by_thread
        imports.main_thread_loads_nothing(hooks)  # nothing counted: nothing ended twice
        assert hooks.calls == ["ended"]
    finally:
        imports._depth.by_thread.clear()


def test_a_load_interrupted_inside_it_ends_and_a_load_of_another_thread_is_left_alone() -> None:
    hooks = Hooks()

    def interrupted(spec):
        raise KeyboardInterrupt

    load = imports._wrap(interrupted, hooks)
    try:
        load(Spec())
    except KeyboardInterrupt:
        pass
    assert hooks.calls == ["started", "ended"] and not imports._depth.by_thread

    inside, release = threading.Event(), threading.Event()

    def slow(spec):
        inside.set()
        release.wait(30)

    worker = threading.Thread(target=imports._wrap(slow, hooks), args=(Spec(),))
    worker.start()
    try:
        assert inside.wait(30)
        imports.main_thread_loads_nothing(hooks)  # the main thread's start: the worker's load still runs
        assert hooks.calls == ["started", "ended", "started"]
    finally:
        release.set()
        worker.join(30)
    assert hooks.calls == ["started", "ended", "started", "ended"] and not imports._depth.by_thread
