"""ha.log is written and rotated by several processes at once (hostagent/logfile.py): real processes write
numbered lines past the size limit, and the kept files (ha.log.1, then ha.log) must hold every line written
after the first one they hold."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

LIMIT = 4000

# Each writer notes when each of its lines was written (CLOCK_MONOTONIC: one clock for every process), so
# that the test knows which lines surely came after the oldest kept one, whoever wrote them.
WRITER = r"""
import itertools, json, logging, os, sys, time
from pathlib import Path
from pymachine.hostvm.hostagent.logfile import rotating_log

log_path, lock, tag, folder = sys.argv[1:5]
logger = logging.getLogger("writer")
logger.addHandler(rotating_log(Path(log_path), Path(lock)))
logger.setLevel(logging.INFO)
logger.propagate = False
written = {}
while not os.path.exists(f"{folder}/go"):  # the writers start together
    time.sleep(0.001)
for i in itertools.count():
    before = time.monotonic()
    if tag == "E":  # a line on stderr, which is the log too (as the agent's is)
        print(f"E {i:06d}", file=sys.stderr, flush=True)
    else:
        logger.info("%s %06d %s", tag, i, "x" * 20)
    written[f"{tag} {i:06d}"] = (before, time.monotonic())
    if i % 2 and tag == "E":  # and one through the log for each two, which rotates it
        logger.info("L %06d %s", i, "x" * 20)
    if os.path.exists(f"{folder}/stop"):
        break
Path(f"{folder}/written-{tag}").write_text(json.dumps(written))
"""


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:  # not rotated yet
        return ""


def _write(tmp_path: Path, tags: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[str]]:
    """Run a writer per tag till the log rotated a few times with each in it; the lines that were written
    surely after the oldest kept one, and are not kept."""
    monkeypatch.setenv("PYMACHINE_LOG_MAX_BYTES", str(LIMIT))
    log, rotated = tmp_path / "ha.log", tmp_path / "ha.log.1"
    procs = []
    for tag in tags:
        with open(log, "ab") as stdio:  # the agent's stdout and stderr are ha.log (supervise.py)
            argv = [sys.executable, "-c", WRITER, str(log), str(tmp_path / "ha.log.lock"), tag, str(tmp_path)]
            procs.append(subprocess.Popen(argv, stdout=stdio, stderr=stdio))
    (tmp_path / "go").touch()
    seen = 0
    for _ in range(3000):  # five looks at a rotated file with every writer's lines (or a while, if never)
        if all(f"\n{t} " in _text(rotated) for t in tags):
            seen += 1
            if seen == 5:
                break
        assert all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "stop").touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    written: dict[str, tuple[float, float]] = {}
    for tag in tags:
        written.update(json.loads((tmp_path / f"written-{tag}").read_text()))
    kept = re.findall(r"^([A-Z] \d{6})", rotated.read_text() + log.read_text(), re.MULTILINE)
    kept = [line for line in kept if line in written]
    assert kept, "no line of the writers is kept"
    oldest_done = written[kept[0]][1]
    lost = [line for line, (begun, _) in written.items() if begun > oldest_done and line not in set(kept)]
    return log, rotated, lost


def test_two_processes_rotating_the_log_lose_nothing_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, rotated, lost = _write(tmp_path, ["A", "B"], monkeypatch)
    assert lost == []
    assert rotated.stat().st_size <= LIMIT and log.stat().st_size <= LIMIT
    # ha.log.1 was rotated when full: the history kept is the limit's worth, not a remnant
    assert rotated.stat().st_size > LIMIT - 100


def test_stderr_follows_the_rotated_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without following, stderr writes into ha.log.1 after a rotation and into a deleted file after two."""
    _log, _rotated, lost = _write(tmp_path, ["E"], monkeypatch)
    assert lost == []
