"""What holds memory in a kernel's namespace: the biggest user variables and the hidden references.

Called at the moment of a memory failure, so it must be cheap and must not allocate much: every size is
read from metadata (``nbytes``, buffer sizes) or estimated from a bounded sample, never by walking a
million-element container or by pandas' ``deep=True`` over a huge object column. A time budget caps the
whole report; past it, the remaining objects get their shallow ``sys.getsizeof`` only.

"Hidden" references are the ones users do not see: IPython's output cache (``Out``/``_oh``, ``_N``,
``_``, ``__``, ``___``) and the last traceback (``sys.last_*`` and IPython's own copy in
``InteractiveTB.tb``), whose frames keep a failed cell's locals alive.
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from typing import Any

_SAMPLE = 64  # elements looked at per container; enough for a mean within a few percent on uniform data
_DEPTH = 3  # how deep sampling recurses into nested containers
_TIME_BUDGET = 0.5  # seconds for the whole report; sizes after that are shallow


@dataclass(frozen=True)
class VariableSize:
    """One user variable and what it holds, in bytes (``exact`` False when estimated by sampling)."""

    name: str
    type_name: str
    nbytes: int
    exact: bool = True
    detail: str = ""  # e.g. "(20000, 20000) float64", "1,000,000 rows x 12 columns"


@dataclass(frozen=True)
class HiddenRef:
    """A reference the user did not make, what it holds, and how much clearing it would free.

    ``nbytes`` is everything it reaches; ``exclusive_bytes`` leaves out objects a user variable also
    holds (clearing ``Out`` does not free a DataFrame that ``df`` still names).
    """

    name: str  # "Out", "_ / __ / ___", "last traceback"
    nbytes: int
    exclusive_bytes: int
    holds: str  # one line: "Out[3] DataFrame 128 MiB, Out[5] ndarray 64 MiB"
    count: int = 0


@dataclass(frozen=True)
class NamespaceReport:
    """The largest user variables (biggest first) and the hidden references, at one moment."""

    variables: tuple[VariableSize, ...]
    hidden: tuple[HiddenRef, ...]
    total_bytes: int  # all user variables, each object counted once
    variable_count: int
    truncated: bool = False  # the time budget ran out: later sizes are shallow
    notes: tuple[str, ...] = field(default=())

    @property
    def hidden_exclusive_bytes(self) -> int:
        return sum(h.exclusive_bytes for h in self.hidden)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able form, for flight records and tests."""
        return {
            "variables": [asdict(v) for v in self.variables],
            "hidden": [asdict(h) for h in self.hidden],
            "total_bytes": self.total_bytes,
            "variable_count": self.variable_count,
            "truncated": self.truncated,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NamespaceReport:
        """Return the report ``to_dict`` wrote (captured samples are stored this way)."""
        return cls(
            variables=tuple(VariableSize(**v) for v in data.get("variables", ())),
            hidden=tuple(HiddenRef(**h) for h in data.get("hidden", ())),
            total_bytes=int(data.get("total_bytes", 0)),
            variable_count=int(data.get("variable_count", 0)),
            truncated=bool(data.get("truncated", False)),
            notes=tuple(data.get("notes", ())),
        )


# --- sizing ------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.expired = False

    def out(self) -> bool:
        if not self.expired and time.monotonic() > self.deadline:
            self.expired = True
        return self.expired


def _module_of(obj: Any) -> str:
    return type(obj).__module__ or ""


def _shallow(obj: Any) -> int:
    try:
        return sys.getsizeof(obj)
    except Exception:  # objects whose __sizeof__ raises: count nothing rather than fail the report
        return 0


def _sequence_sample(seq: Any, n: int) -> list[Any]:
    """Return up to ``n`` elements spread evenly over an indexable sequence (not just its head)."""
    length = len(seq)
    if length <= n:
        return list(seq)
    step = length / n
    return [seq[int(i * step)] for i in range(n)]


def _sampled(total: int, sample: list[Any], depth: int, clock: _Clock) -> int:
    if not sample:
        return 0
    sizes = [size_of(x, depth=depth - 1, clock=clock)[0] for x in sample]
    return int(sum(sizes) / len(sizes) * total)


def _pandas_object_bytes(values: Any, clock: _Clock) -> int:
    """Return the estimated deep size of the Python objects in an object-dtype column, from a sample."""
    n = len(values)
    if n == 0:
        return 0
    sample = _sequence_sample(values, _SAMPLE)
    return _sampled(n, sample, _DEPTH, clock)


def _pandas_size(obj: Any, clock: _Clock) -> tuple[int, bool, str]:
    import pandas as pd  # already imported: obj is a pandas object

    if isinstance(obj, pd.DataFrame):
        shallow = int(obj.memory_usage(index=True, deep=False).sum())
        extra, exact = 0, True
        for _, col in obj.items():
            if clock.out():  # thousands of object columns: the rest stay shallow
                exact = False
                break
            # Python-object columns (object dtype, and string dtype with python storage): sampled.
            if col.dtype == object or (str(col.dtype) in ("string", "str") and "python" in repr(col.dtype)):
                extra += _pandas_object_bytes(col.array, clock)
                exact = False
        if obj.index.dtype == object:
            extra += _pandas_object_bytes(obj.index, clock)
            exact = False
        rows, cols = obj.shape
        return shallow + extra, exact, f"{rows:,} rows x {cols:,} columns"
    if isinstance(obj, pd.Series):
        shallow = int(obj.memory_usage(index=True, deep=False))
        exact = True
        if obj.dtype == object:
            shallow += _pandas_object_bytes(obj.array, clock)
            exact = False
        return shallow, exact, f"{len(obj):,} rows {obj.dtype}"
    if isinstance(obj, pd.Index):
        shallow = int(obj.memory_usage(deep=False))
        if obj.dtype == object:
            return shallow + _pandas_object_bytes(obj, clock), False, f"{len(obj):,} entries"
        return shallow, True, f"{len(obj):,} entries"
    return _shallow(obj), False, ""


def size_of(obj: Any, *, depth: int = _DEPTH, clock: _Clock | None = None) -> tuple[int, bool, str]:
    """Return ``(bytes, exact, detail)`` for one object: metadata where it exists, a bounded sample otherwise."""
    clock = clock or _Clock(_TIME_BUDGET)
    module = _module_of(obj)
    try:
        if module.startswith("numpy") and hasattr(obj, "nbytes") and hasattr(obj, "dtype"):
            nbytes = int(obj.nbytes)
            shape = getattr(obj, "shape", ())
            detail = f"{tuple(shape)} {obj.dtype}"
            if obj.dtype == object and getattr(obj, "size", 0) and depth > 0 and not clock.out():
                flat = obj.reshape(-1) if obj.ndim != 1 else obj
                return nbytes + _sampled(obj.size, _sequence_sample(flat, _SAMPLE), depth, clock), False, detail
            return nbytes, True, detail
        if module.startswith("pandas"):
            return _pandas_size(obj, clock)
        if module.startswith("pyarrow") and hasattr(obj, "nbytes"):
            rows = getattr(obj, "num_rows", None) or (len(obj) if hasattr(obj, "__len__") else 0)
            return int(obj.nbytes), True, f"{rows:,} rows (Arrow)"
        if module.startswith("polars"):
            if hasattr(obj, "estimated_size"):
                return int(obj.estimated_size()), False, f"{getattr(obj, 'shape', '')} (polars)"
        if module.startswith("torch") and hasattr(obj, "element_size") and hasattr(obj, "nelement"):
            return int(obj.element_size() * obj.nelement()), True, f"{tuple(obj.shape)} {obj.dtype}"
        if isinstance(obj, (bytes, bytearray, str)):
            return _shallow(obj), True, f"{len(obj):,} {'chars' if isinstance(obj, str) else 'bytes'}"
        if isinstance(obj, memoryview):
            return int(obj.nbytes), True, f"{obj.nbytes:,} bytes"
        if isinstance(obj, (int, float, complex, bool, type(None))):
            return _shallow(obj), True, ""
        if isinstance(obj, (types.ModuleType, types.FunctionType, type, types.BuiltinFunctionType, types.MethodType)):
            return _shallow(obj), True, ""
        if isinstance(obj, (list, tuple)):
            size = _shallow(obj)
            if depth > 0 and obj and not clock.out():
                size += _sampled(len(obj), _sequence_sample(obj, _SAMPLE), depth, clock)
            return size, len(obj) == 0, f"{len(obj):,} items"
        if isinstance(obj, dict):
            size = _shallow(obj)
            if depth > 0 and obj and not clock.out():
                items = list(itertools.islice(obj.items(), _SAMPLE))
                keys = [k for k, _ in items]
                values = [v for _, v in items]
                size += _sampled(len(obj), keys, depth, clock) + _sampled(len(obj), values, depth, clock)
            return size, len(obj) == 0, f"{len(obj):,} keys"
        if isinstance(obj, (set, frozenset)) or type(obj).__name__ == "deque":
            size = _shallow(obj)
            if depth > 0 and obj and not clock.out():
                size += _sampled(len(obj), list(itertools.islice(obj, _SAMPLE)), depth, clock)
            return size, len(obj) == 0, f"{len(obj):,} items"
        # Anything else that says how big its buffer is (scipy.sparse parts, array.array, mmap ...).
        nbytes = getattr(obj, "nbytes", None)
        if isinstance(nbytes, int) and nbytes >= 0:
            return nbytes + _shallow(obj), True, ""
        size = _shallow(obj)
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict) and attrs and depth > 0 and not clock.out():
            values = list(itertools.islice(attrs.values(), _SAMPLE))
            size += _sampled(len(attrs), values, depth - 1, clock)
            return size, False, ""
        return size, True, ""
    except Exception:  # a broken __len__/__getitem__/nbytes must never break the failure path
        return _shallow(obj), False, ""


# --- the namespace -------------------------------------------------------------------------------------

_SKIP_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type, types.MethodType)
_OUTPUT_NAMES = ("_", "__", "___")


def _is_user_name(name: str, value: Any, hidden: dict[str, Any]) -> bool:
    if name.startswith("_"):
        return False
    if name in hidden and hidden[name] is value:
        return False  # put there by IPython at start-up (In, Out, exit, get_ipython ...)
    if name in ("In", "Out"):
        return False
    return not isinstance(value, _SKIP_TYPES)


def _frames_of(tb: Any) -> list[types.FrameType]:
    frames = []
    while tb is not None and len(frames) < 200:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _frame_locals(frame: types.FrameType) -> list[Any]:
    """Return what a frame's locals hold without creating an ``f_locals`` snapshot (which would keep them alive)."""
    if frame.f_code.co_flags & 0x1 == 0:  # not CO_OPTIMIZED: module-level, its locals are the user namespace
        return []
    skip = (frame.f_globals, frame.f_builtins)
    out = []
    for obj in gc.get_referents(frame):
        if any(obj is s for s in skip) or isinstance(obj, (types.FrameType, types.CodeType, types.FunctionType)):
            continue
        out.append(obj)
    return out


def _describe(items: list[tuple[str, Any, int]], limit: int = 3) -> str:
    from ..sizes import format_bytes

    items = sorted(items, key=lambda t: -t[2])
    parts = [f"{label} {type(obj).__name__} {format_bytes(n)}" for label, obj, n in items[:limit]]
    if len(items) > limit:
        parts.append(f"and {len(items) - limit} more")
    return ", ".join(parts)


def namespace_report(ip: Any, n: int = 5, *, time_budget: float = _TIME_BUDGET) -> NamespaceReport:
    """Return the ``n`` largest user variables and the hidden references of shell ``ip``, within ``time_budget``.

    Safe to call while memory is exhausted: sizes come from metadata and small samples, and nothing big
    is allocated. Each object is counted once, under the first name found.
    """
    clock = _Clock(time_budget)
    notes: list[str] = []
    user_ns: dict[str, Any] = getattr(ip, "user_ns", None) or {}
    hidden_ns: dict[str, Any] = getattr(ip, "user_ns_hidden", None) or {}

    sizes_by_id: dict[int, int] = {}
    variables: list[VariableSize] = []
    for name, value in list(user_ns.items()):
        if not _is_user_name(name, value, hidden_ns):
            continue
        if id(value) in sizes_by_id:
            continue  # the same object under a second name: counted once
        if clock.out():
            nbytes, exact, detail = _shallow(value), False, ""
        else:
            nbytes, exact, detail = size_of(value, clock=clock)
        sizes_by_id[id(value)] = nbytes
        variables.append(VariableSize(name, type(value).__name__, nbytes, exact, detail))
    variables.sort(key=lambda v: -v.nbytes)
    total = sum(v.nbytes for v in variables)

    def sized(obj: Any) -> int:
        known = sizes_by_id.get(id(obj))
        return known if known is not None else size_of(obj, clock=clock)[0]

    hidden: list[HiddenRef] = []
    # The output cache: Out/_oh and the _N names point at the same objects.
    oh = user_ns.get("_oh")
    if isinstance(oh, dict) and oh:
        items, seen = [], set()
        exclusive = total_out = 0
        for key, obj in list(oh.items()):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            nbytes = sized(obj)
            total_out += nbytes
            if id(obj) not in sizes_by_id:
                exclusive += nbytes
            items.append((f"Out[{key}]", obj, nbytes))
        hidden.append(HiddenRef("Out", total_out, exclusive, _describe(items), len(oh)))
    # _, __, ___: usually also in Out; count what is not.
    items = []
    exclusive = total_last = 0
    out_ids = {id(v) for v in oh.values()} if isinstance(oh, dict) else set()
    for name in _OUTPUT_NAMES:
        obj = user_ns.get(name)
        if obj is None or isinstance(obj, str) and obj == "":
            continue
        nbytes = sized(obj)
        total_last += nbytes
        if id(obj) not in sizes_by_id and id(obj) not in out_ids:
            exclusive += nbytes
        items.append((name, obj, nbytes))
    if items:
        hidden.append(HiddenRef("_ / __ / ___", total_last, exclusive, _describe(items), len(items)))
    # The last tracebacks: their frames keep the failed code's locals alive.
    tbs: list[Any] = []
    for tb in (
        getattr(sys, "last_traceback", None),
        getattr(getattr(ip, "InteractiveTB", None), "tb", None),
        getattr(getattr(ip, "SyntaxTB", None), "tb", None),
    ):
        if tb is not None and all(tb is not t for t in tbs):
            tbs.append(tb)
    if tbs:
        items, seen_frames, seen_objs = [], set(), set()
        total_tb = exclusive = 0
        frame_count = 0
        for tb in tbs:
            for frame in _frames_of(tb):
                if id(frame) in seen_frames:
                    continue
                seen_frames.add(id(frame))
                frame_count += 1
                for obj in _frame_locals(frame):
                    if id(obj) in seen_objs or obj is None or isinstance(obj, (str, int, float, bool)):
                        continue
                    seen_objs.add(id(obj))
                    nbytes = sized(obj)
                    total_tb += nbytes
                    if id(obj) not in sizes_by_id:
                        exclusive += nbytes
                    items.append((f"{frame.f_code.co_name}()", obj, nbytes))
        if total_tb or frame_count:
            hidden.append(HiddenRef("last traceback", total_tb, exclusive, _describe(items), frame_count))
    if clock.expired:
        notes.append(f"sizing stopped after {time_budget:g} s; later sizes are shallow")
    hidden.sort(key=lambda h: -h.exclusive_bytes)
    return NamespaceReport(
        variables=tuple(variables[:n]),
        hidden=tuple(hidden),
        total_bytes=total,
        variable_count=len(variables),
        truncated=clock.expired,
        notes=tuple(notes),
    )
