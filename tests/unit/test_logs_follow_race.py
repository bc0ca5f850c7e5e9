"""The json-file log reader against the interleavings that lost output (docker-py `containers.run` returned
b"" for a container that printed lines and exited 0). Each test stages one interleaving deterministically:
the "writer" or the "client" acts from inside the reader's `running()` callback or between the call and
the first step of the iterator, exactly where the API thread could be preempted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from pymachine_agent.runtime.logs import JsonFileWriter, read_logs


def _write(path: Path, *lines: bytes, max_size: int = 0, max_file: int = 1) -> None:
    w = JsonFileWriter(str(path), max_size=max_size, max_file=max_file)
    for line in lines:
        w.write("stdout", line)
    w.close()


def _once(action: Callable[[], None], then: bool = False) -> Callable[[], bool]:
    """A `running()` that performs `action` on its first call (the writer or client acting while the reader
    is between reads) and reports the container as `then` from there on."""
    done: list[bool] = []

    def running() -> bool:
        if not done:
            done.append(True)
            action()
        return then

    return running


def test_removal_between_request_and_first_read_keeps_the_output(tmp_path: Path) -> None:
    # docker-py run(): GET logs?follow=1 returns once the headers are sent; the client then waits and
    # DELETEs the container, and only then reads the body. The API thread may not have read the log yet.
    for follow in (True, False):
        cdir = tmp_path / f"ctr-{follow}"
        cdir.mkdir()
        log = cdir / "container-json.log"
        _write(log, b"4096\n", b"20\n", b"done\n")
        entries = read_logs(str(log), stderr=False, follow=follow, running=lambda: False)
        shutil.rmtree(cdir)  # `docker rm` between the response headers and the first read
        assert [e.data for e in entries] == [b"4096\n", b"20\n", b"done\n"]


def test_torn_record_at_the_first_pass_is_read_once_complete(tmp_path: Path) -> None:
    # The first pass meets the record the supervisor is writing, half on disk; the rest lands before the
    # follow loop looks again. Resuming after the torn bytes read "...}\n" alone and dropped the line.
    log = tmp_path / "container-json.log"
    _write(log, b"first\n")
    record = json.dumps({"log": "second\n", "stream": "stdout", "time": "2026-01-01T00:00:00Z"}).encode()
    record += b"\n"
    with open(log, "ab") as f:
        f.write(record[:10])

    def finish() -> None:
        with open(log, "ab") as f:
            f.write(record[10:])

    entries = read_logs(str(log), follow=True, running=_once(finish))
    assert [e.data for e in entries] == [b"first\n", b"second\n"]


def test_rotation_while_following_loses_no_record(tmp_path: Path) -> None:
    # The writer fills the file, renames it to .1 and starts a new one while the reader sleeps between
    # polls: the records the reader had not reached yet are in the renamed file, not the new one.
    log = tmp_path / "container-json.log"
    w = JsonFileWriter(str(log), max_size=250, max_file=2)
    w.write("stdout", b"a\n")

    def burst() -> None:
        for i in range(5):
            w.write("stdout", b"line %d\n" % i)
        w.close()

    entries = list(read_logs(str(log), follow=True, running=_once(burst)))
    assert Path(f"{log}.1").exists()  # the burst did rotate once (and only once: "a" is still there)
    assert [e.data for e in entries] == [b"a\n"] + [b"line %d\n" % i for i in range(5)]
