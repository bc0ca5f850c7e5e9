"""For the tests that push to deploy (tests/vm/test_deploy_*): a git working tree driven by the real git CLI,
and a request loop that records every answer and failure during a switch."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


class GitProject:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        root.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=900,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def commit_files(self, files: dict[str, str], message: str) -> None:
        for path, text in files.items():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-qm", message)


class RequestLoop:
    """`fetch()` again and again on a thread until stopped: every answer in `seen`, every failure in
    `errors` (what a switch without a gap must leave empty)."""

    # A fetch's own timeout: far above a request under load here (6 s at load 30), far below the 60 s a lost
    # answer used to wait, so a request that hangs fails the test with its times instead of passing late.
    TIMEOUT_S = 20.0

    def __init__(self, fetch: Callable[[], str]) -> None:
        self.fetch = fetch
        self.seen: list[str] = []
        self.errors: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self.began = time.monotonic()

    def _run(self) -> None:
        while not self._done.is_set():
            sent = time.monotonic() - self.began
            try:
                self.seen.append(self.fetch())
            except Exception as exc:  # noqa: BLE001 - every failure is what the tests look for
                self.errors.append(
                    f"{exc!r} (sent at {sent:.1f} s, failed at {time.monotonic() - self.began:.1f} s)"
                )

    def stamp(self, line: str) -> str:
        """`line` with the time since the loop began, to place a failure among a push's lines."""
        return f"[{time.monotonic() - self.began:6.1f} s] {line}"

    def start(self) -> RequestLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
