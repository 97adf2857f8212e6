"""What a cell's code is, once copies are folded together: normalised code, its key, the library it leans on.

A course notebook copied by two hundred students runs the same cell two hundred times, with different
comments and spacing. ``normalize_code`` drops comments and blank lines and collapses whitespace (nothing
else: literals and names stay, so two cells that read different files stay two cells). Pure functions.
"""

from __future__ import annotations

import hashlib
import io
import re
import tokenize

# Names a cell uses for the data libraries that allocate most (import name or its usual alias).
_LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pandas", ("pandas", "pd")),
    ("polars", ("polars", "pl")),
    ("numpy", ("numpy", "np")),
    ("torch", ("torch",)),
    ("tensorflow", ("tensorflow", "tf")),
    ("jax", ("jax", "jnp")),
    ("sklearn", ("sklearn",)),
    ("scipy", ("scipy",)),
    ("duckdb", ("duckdb",)),
    ("pyarrow", ("pyarrow", "pa")),
    ("dask", ("dask", "dd")),
    ("xarray", ("xarray", "xr")),
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SKIP = (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER)


def normalize_code(code: str | None) -> str:
    """Return the cell's code without comments, blank lines and spacing differences, so copies compare equal."""
    if not code:
        return ""
    try:
        out: list[str] = []
        line: list[str] = []
        depth = 0
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in _SKIP:
                continue
            if tok.type == tokenize.INDENT:
                depth += 1
            elif tok.type == tokenize.DEDENT:
                depth -= 1
            elif tok.type == tokenize.NEWLINE:
                if line:
                    out.append("  " * depth + " ".join(line))
                line = []
            else:
                line.append(tok.string)
        if line:
            out.append("  " * depth + " ".join(line))
        return "\n".join(out)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # A cell that does not tokenize (it may have died half-typed): fold comments and spacing by lines.
        lines = [re.sub(r"\s+", " ", ln.split("#", 1)[0]).strip() for ln in code.splitlines()]
        return "\n".join(ln for ln in lines if ln)


def cell_key(code: str | None) -> str | None:
    """Return a short stable key of the normalised code (None without code): the GROUP BY of top cells."""
    return cell_facts(code)[0]


def library_of(code: str | None, native_library: str | None = None) -> str | None:
    """Return the library a death is charged to: the native library it crashed in, else the first data
    library the cell's code names (pandas, numpy, polars...), else None."""
    return cell_facts(code, native_library)[1]


def cell_facts(code: str | None, native_library: str | None = None) -> tuple[str | None, str | None]:
    """Return (cell_key, library) with one tokenizing pass: what a record stores for the fleet's grouping."""
    norm = normalize_code(code)
    key = hashlib.sha1(norm.encode("utf-8", "surrogatepass")).hexdigest()[:20] if norm else None
    if native_library:
        return key, str(native_library)
    names = set(_NAME.findall(norm))
    for library, aliases in _LIBRARIES:
        if names.intersection(aliases):
            return key, library
    return key, None
