"""Write the golden outputs: every renderer's text for every captured sample (run once, before the records refactor).

Run from the repository root: ``.venv/bin/python tests/samples/golden/capture.py``. They were written once,
before the records refactor (2026-11-28), from the code of that day; tests/test_records_golden.py renders
the same samples through the records and the renderers and compares, byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent


def main() -> None:
    sys.path.insert(0, str(SAMPLES.parent))
    from test_records_golden import render_all  # noqa: E402  (the test renders the same way)

    for name, text in render_all(SAMPLES).items():
        (HERE / name).write_text(text)


if __name__ == "__main__":
    main()
