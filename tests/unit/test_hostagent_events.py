"""Host events: JSON-lines (de)serialisation, offsets, torn lines, rotation."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pymachine.hostvm.hostagent import events
from pymachine.hostvm.hostagent.events import Event, EventWriter, read_events


def test_round_trip_keeps_type_time_and_fields(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "e.jsonl")
    sent = w.emit("forward", action="opened", host_port=8080, proto="tcp", error=None)
    got, offset = read_events(w.path)
    assert offset == w.path.stat().st_size
    assert [(e.type, e.fields) for e in got] == [
        ("forward", {"action": "opened", "host_port": 8080, "proto": "tcp"})
    ]
    assert got[0].ts == pytest.approx(sent.ts, abs=0.001)
    assert "error" not in json.loads(w.path.read_text())  # None fields are left out


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError):
        events.make("bogus")


def test_reader_skips_garbage_and_waits_for_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = Event("state", 1.0, {"state": "ready"}).to_json()
    path.write_text(f"{good}\nnot json\n[1,2]\n{good[:10]}")
    got, offset = read_events(path)
    assert [e.get("state") for e in got] == ["ready"]
    # the half-written line is not consumed: the next read, after the writer finishes it, gets it whole
    with open(path, "a") as fh:
        fh.write(good[10:] + "\n")
    more, _ = read_events(path, offset)
    assert [e.type for e in more] == ["state"]


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_events(tmp_path / "none.jsonl") == ([], 0)


def test_rotation_keeps_one_old_file(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "e.jsonl", max_bytes=300)
    for i in range(20):
        w.emit("stage", stage=f"s{i}", message="x" * 20)
    assert (tmp_path / "e.jsonl.1").exists()
    assert w.path.stat().st_size <= 300
    last, _ = read_events(w.path)
    assert last[-1].get("stage") == "s19"


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "e.jsonl")

    def burst(n: int) -> None:
        for i in range(200):
            w.emit("forward", action="opened", host_port=n, seq=i, pad="y" * 200)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = w.path.read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["type"] == "forward" for line in lines)


def test_follow_yields_new_events_and_stops(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "e.jsonl")
    w.emit("state", state="starting")
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        for e in events.follow(w.path, 0, poll=0.01, stop=stop.is_set):
            seen.append(e.get("state"))
            if len(seen) == 2:
                stop.set()

    t = threading.Thread(target=reader)
    t.start()
    w.emit("state", state="ready")
    t.join(timeout=10)
    assert seen == ["starting", "ready"]


def test_subscribers_see_each_event(tmp_path: Path) -> None:
    w = EventWriter(tmp_path / "e.jsonl")
    got: list[Event] = []
    w.subscribe(got.append)
    w.emit("link", state="down", error="boom")
    assert [(e.type, e.get("error")) for e in got] == [("link", "boom")]
