"""The flight record file: survives its writer, tolerates truncation and damage, never raises on reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from kernel_sentinel.autopsy.flight import FILE_SIZE, FlightWriter, parse_record, read_record


def test_round_trip_keeps_the_newest_record(tmp_path):
    w = FlightWriter(tmp_path / "1.rec")
    for i in range(5):
        assert w.write("cell", {"execution_count": i, "code": "x" * i})
    w.write("memory", {"t": 1.0})
    w.close()
    regions, notes = read_record(tmp_path / "1.rec")
    assert regions["cell"]["execution_count"] == 4
    assert regions["memory"] == {"t": 1.0}
    assert "meta" not in regions and notes == []


def test_too_big_record_is_refused_not_half_written(tmp_path):
    w = FlightWriter(tmp_path / "1.rec")
    w.write("state", {"state": "running"})
    assert not w.write("state", {"state": "x" * 5000})
    assert read_record(tmp_path / "1.rec")[0]["state"] == {"state": "running"}


def test_survives_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "k.rec"
    code = (
        "import os, signal, sys\n"
        "from kernel_sentinel.autopsy.flight import FlightWriter\n"
        f"w = FlightWriter({str(path)!r})\n"
        "w.write('cell', {'execution_count': 7, 'code': 'boom()'})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    regions, _ = read_record(path)
    assert regions["cell"] == {"execution_count": 7, "code": "boom()"}


def test_truncated_and_damaged_records_degrade(tmp_path):
    w = FlightWriter(tmp_path / "1.rec")
    w.write("meta", {"kernel_id": "k"})
    w.write("cell", {"execution_count": 1})
    w.write("cell", {"execution_count": 2})
    w.close()
    raw = (tmp_path / "1.rec").read_bytes()
    assert len(raw) == FILE_SIZE
    notes: list[str] = []
    cut = parse_record(raw[:5000], notes)
    assert cut == {"meta": {"kernel_id": "k"}}
    assert any("truncated" in n for n in notes)
    # flip a byte in the newest cell slot: the older slot is used
    from kernel_sentinel.autopsy.flight import _OFFSETS, REGIONS

    damaged = bytearray(raw)
    damaged[_OFFSETS["cell"] + 0 * REGIONS["cell"] + 30] ^= 0xFF  # seq 2 lives in slot 0
    notes = []
    assert parse_record(bytes(damaged), notes)["cell"] == {"execution_count": 1}
    assert parse_record(b"") == {}
    assert parse_record(os.urandom(FILE_SIZE)) == {}
    assert read_record(tmp_path / "missing.rec")[0] == {}


def _newest_text(path, region: str) -> str:
    """Return the JSON text of a region's newest slot, as written."""
    from kernel_sentinel.autopsy.flight import _HEAD, _OFFSETS, REGIONS

    raw = open(path, "rb").read()
    slots = []
    for index in (0, 1):
        start = _OFFSETS[region] + index * REGIONS[region]
        _magic, seq, length, _crc = _HEAD.unpack(raw[start : start + _HEAD.size])
        slots.append((seq, raw[start + _HEAD.size : start + _HEAD.size + length].decode()))
    return max(slots)[1]


def test_the_recorders_cell_records_are_the_json_of_its_cell_dict(tmp_path):
    """The cell hooks write JSON they build once per cell (the finished record from the started one's text):
    byte for byte what encoding the record's dict gives, whatever the code holds."""
    import json
    import threading

    from kernel_sentinel.autopsy.flight import CODE_LIMIT, FlightWriter
    from kernel_sentinel.autopsy.recorder import Recorder

    rec = Recorder.__new__(Recorder)
    rec.writer = FlightWriter(tmp_path / "c.rec")
    rec._cell = rec._cell_text = rec._line = rec._pending = rec._ec_offset = None
    rec._looked_for_pending, rec._long_pause, rec._wake = True, False, threading.Event()
    rec.ip = type("IP", (), {"execution_count": 3})()
    encoder = json.JSONEncoder(separators=(",", ":"), default=str)
    codes = ['x = 1', 'print("finished":null,"cell_id":"x")', '"""\\n\\t\x00 é ☃ 𝄞 \\\\"""', ',"finished":null,"cell_id":',
             "y = 2\n" * (CODE_LIMIT // 3), ""]
    cell_ids = [None, "abc", 'a"b,"finished":null,"cell_id":', 7, {"x": 1, "finished": None, "cell_id": [None]}]
    for n, code in enumerate(codes * 2):
        info = type("Info", (), {"raw_cell": code, "store_history": n % 2 == 0, "cell_id": cell_ids[n % len(cell_ids)]})()
        rec._pre_run_cell(info)
        assert _newest_text(tmp_path / "c.rec", "cell") == encoder.encode(rec._cell)
        rec._line = None if n % 3 else n
        result = type("Result", (), {"execution_count": 4 + n, "info": info})()
        rec._post_run_cell(result)
        assert rec._cell["finished"] is not None and "line" in rec._cell
        assert _newest_text(tmp_path / "c.rec", "cell") == encoder.encode(rec._cell)
    rec.writer.close()
