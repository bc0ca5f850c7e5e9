"""json-file logs, byte-compatible with Docker's: one `{"log","stream","time"}` object per line, lines split
at 16 KiB as Docker does, size-based rotation (`<file>.1` is the newest rotated file)."""

from __future__ import annotations

import errno
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 16 * 1024


def rfc3339nano(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC3339Nano UTC timestamp we wrote."""
    if not text or text.startswith("0001-"):
        return 0.0
    main, _, frac = text.rstrip("Z").partition(".")
    import calendar

    secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return secs + (int(frac.ljust(9, "0")[:9]) / 1e9 if frac else 0.0)


class JsonFileWriter:
    def __init__(self, path: str, max_size: int = 0, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(max_file, 1)
        self._f = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the writer
        self._size = self._f.tell()
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.dropped = 0  # lines that could not be written (ENOSPC)

    def write(self, stream: str, data: bytes) -> None:
        buf = self._partial[stream] + data
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl >= MAX_LINE:
                if len(buf) >= MAX_LINE:
                    self._emit(stream, buf[:MAX_LINE])
                    buf = buf[MAX_LINE:]
                    continue
                break
            self._emit(stream, buf[: nl + 1])
            buf = buf[nl + 1 :]
        self._partial[stream] = buf

    def flush_partial(self) -> None:
        for stream, buf in self._partial.items():
            if buf:
                self._emit(stream, buf)
        self._partial = {"stdout": b"", "stderr": b""}

    def _emit(self, stream: str, line: bytes) -> None:
        record = json.dumps(
            {"log": line.decode("utf-8", errors="replace"), "stream": stream, "time": rfc3339nano()},
            ensure_ascii=False,
        )
        raw = record.encode() + b"\n"
        try:
            if self._f.write(raw) != len(raw):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            # a full disk: this line is lost (and counted), never the container nor the lines after it;
            # a torn line is cut off so that the file stays one JSON object per line
            self.dropped += 1
            try:
                os.ftruncate(self._f.fileno(), self._size)
            except OSError:
                pass
            return
        self._size += len(raw)
        if self.max_size and self._size >= self.max_size:
            self._rotate()

    def _rotate(self) -> None:
        self._f.close()
        if self.max_file <= 1:
            os.truncate(self.path, 0)
        else:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self.flush_partial()
        self._f.close()


class NullWriter:
    """--log-driver none: output still reaches attached clients, nothing is stored."""

    def write(self, stream: str, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class LogEntry:
    stream: str  # "stdout" | "stderr"
    data: bytes
    time: str  # RFC3339Nano


def _files(path: str) -> list[str]:
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    return [*reversed(rotated), path]


def _parse(line: bytes) -> LogEntry | None:
    try:
        rec = json.loads(line)
        return LogEntry(rec["stream"], rec["log"].encode(), rec["time"])
    except (ValueError, KeyError):
        return None  # a torn last line while the supervisor writes it


class _LineReader:
    """Complete lines from an open log file. A torn last line (the writer is mid-record) stays in `_rest`
    until its newline arrives, so no byte is skipped or read twice."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._rest = b""

    def lines(self) -> Iterator[bytes]:
        while chunk := self.f.read(64 * 1024):
            *done, self._rest = (self._rest + chunk).split(b"\n")
            for line in done:
                yield line + b"\n"

    def truncated(self) -> bool:
        """True (and rewound) when the file shrank under us: max-file 1 rotation truncates in place."""
        if os.fstat(self.f.fileno()).st_size >= self.f.tell():
            return False
        self.f.seek(0)
        self._rest = b""
        return True

    def same_file(self, path: str) -> bool | None:
        """Whether `path` still names our file; None while it names nothing (removed, or mid-rotation)."""
        try:
            return os.stat(path).st_ino == os.fstat(self.f.fileno()).st_ino
        except FileNotFoundError:
            return None


def _open(name: str) -> _LineReader | None:
    try:
        return _LineReader(open(name, "rb", buffering=0))  # noqa: SIM115 - closed by _entries
    except FileNotFoundError:
        return None


def read_logs(
    path: str,
    *,
    stdout: bool = True,
    stderr: bool = True,
    since: float = 0,
    until: float = 0,
    tail: int | None = None,
    follow: bool = False,
    running: Callable[[], bool] = lambda: False,
) -> Iterator[LogEntry]:
    """Entries from the log and its rotated files, oldest first; with `follow`, keep yielding new entries
    while `running()` says the container runs (and until the writer is done with the file).

    The files are opened here, before the iterator is returned, not on its first step: the API sends its
    response headers before it iterates, and a client (docker-py's `containers.run(remove=True)`) may
    remove the container, and with it the log, in between. Open descriptors keep the data readable."""
    rotated = [r for r in map(_open, _files(path)[:-1]) if r is not None]
    streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
    return _entries(path, rotated, _open(path), streams, since, until, tail, follow, running)


def _entries(
    path: str,
    rotated: list[_LineReader],
    cur: _LineReader | None,
    streams: set[str],
    since: float,
    until: float,
    tail: int | None,
    follow: bool,
    running: Callable[[], bool],
) -> Iterator[LogEntry]:
    def keep(e: LogEntry | None) -> bool:
        if e is None or e.stream not in streams:
            return False
        if since or until:
            t = parse_time(e.time)
            if (since and t < since) or (until and t > until):
                return False
        return True

    def drain(r: _LineReader) -> Iterator[LogEntry]:
        for raw in r.lines():
            e = _parse(raw)
            if keep(e):
                yield e  # type: ignore[misc]

    try:
        last: deque[LogEntry] | None = deque(maxlen=tail) if tail is not None and tail >= 0 else None
        for r in [*rotated, *([cur] if cur else [])]:
            if last is not None:
                last.extend(drain(r))
            else:
                yield from drain(r)
        if last is not None:
            yield from last
        while follow:
            alive = running()  # sampled first: once it says "exited", everything is already in the file
            if cur is None:
                cur = _open(path)
                if cur is None and not alive:
                    return
            got = False
            if cur is not None:
                for e in drain(cur):
                    got = True
                    yield e
                same = cur.same_file(path)
                if same is False:  # rotated: the writer closed the old file before the rename; on to the new
                    yield from drain(cur)
                    cur.f.close()
                    cur = _open(path)
                    continue
                if same is None and not alive:  # removed (or a rotation the exit ended): we read all we held
                    return
                if same and cur.truncated():
                    continue
            if got:
                continue
            if not alive:
                return
            time.sleep(0.1)
    finally:
        for r in [*rotated, *([cur] if cur else [])]:
            r.f.close()
