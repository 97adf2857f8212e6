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
