"""Exec: a shell in the container on a TTY (`docker exec -it` over the exec attach socket), shown in a VT100
terminal widget, so `sh`, `top` and `vi` work, with Ctrl+C / Ctrl+D and the TTY resized with the widget.

The socket is read on a stream thread (decoded incrementally: a UTF-8 character may straddle two reads);
keys are written from the GUI thread (a small write to a socket). Resizes go to the engine on a worker.
"""

from __future__ import annotations

import codecs
import select
import time
from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from . import workers
from .common import describe
from .terminal_widget import TerminalWidget
from .workers import StreamThread

READY = "\x00ready\x00"  # in-band marker from the pump thread: the exec socket is open
SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null; then exec bash; else exec sh; fi"]


class ExecTerminal(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.screen = TerminalWidget()
        self.screen.placeholder = "Select a running container and click Open shell."
        self.screen.send.connect(self.send_bytes)
        self.screen.answer.connect(self.send_bytes)  # the terminal's replies (cursor position reports)
        self.screen.resized.connect(self._resized)
        # for a quick command without focusing the terminal (and for people who prefer a line editor)
        self.input = QLineEdit(placeholderText="or type a command line here and press Enter")
        self.input.returnPressed.connect(self.send_line)
        self.input.setEnabled(False)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.open_button = QPushButton("Open &shell")
        self.close_button = QPushButton("Close shell")
        self.close_button.clicked.connect(self.stop)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.open_button)
        top.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.screen, 1)
        lay.addWidget(self.input)
        self.sock: Any = None
        self.thread: StreamThread | None = None
        self.dc: Any = None
        self.exec_id = ""
        self.sizes_sent: list[tuple[int, int]] = []  # (cols, rows) the engine was told, for tests
        self._sized_after_output = False

    def open(self, dc: Any, container_id: str, name: str, command: list[str] | None = None) -> None:
        """Create the exec and pump its socket on a thread: nothing here waits on the engine."""
        self.stop()
        self.dc = dc
        self.screen.reset()
        self.title.setText(f"Shell in {name} (Ctrl+C, Ctrl+D and full-screen programs work here)")
        cols, rows = self.screen.grid_size()
        self._sized_after_output = False
        cmd = command or SHELL
        self.thread = StreamThread(
            lambda emit, stopped: self._pump(dc, container_id, cmd, (cols, rows), emit, stopped)
        )
        self.thread.chunk.connect(self._output)
        self.thread.ended.connect(self._ended)
        self.thread.start()

    def _pump(
        self, dc: Any, container_id: str, cmd: list[str], size: tuple[int, int], emit: Any, stopped: Any
    ) -> None:
        cols, rows = size
        self.exec_id = dc.api.exec_create(
            container_id,
            cmd,
            stdin=True,
            tty=True,
            environment={"TERM": "xterm"},
        )["Id"]
        sock = dc.api.exec_start(self.exec_id, tty=True, socket=True)
        self.sock = getattr(sock, "_sock", sock)
        try:
            dc.api.exec_resize(self.exec_id, height=rows, width=cols)
            self.sizes_sent.append((cols, rows))
        except Exception:  # noqa: BLE001 - the shell still works at the engine's default size
            pass
        emit(READY)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while not stopped():
                ready, _, _ = select.select([self.sock], [], [], 0.2)
                if not ready:
                    continue
                data = self.sock.recv(65536)
                if not data:
                    break
                text = decoder.decode(data)
                if text:
                    emit(text)
        finally:
            # Stopped (another container, the window closing): nobody reads the code, and asking for it (up to
            # 20 exec_inspect round trips while the shell notices its closed stdin) kept the thread alive past
            # the exit's wait for retired threads, so Qt aborted the process ("QThread: Destroyed while thread
            # '' is still running", make_screenshots.py's exit 134).
            if not stopped():
                code = self._exit_code(dc)
                emit(f"\r\n[shell ended{f' with exit code {code}' if code is not None else ''}]\r\n")

    def _exit_code(self, dc: Any) -> int | None:
        """The exec's exit code; the engine may record it a moment after the stream closes."""
        for _ in range(20):
            try:
                info = dc.api.exec_inspect(self.exec_id)
            except Exception:  # noqa: BLE001 - the container may be gone
                return None
            if not info.get("Running"):
                return info.get("ExitCode")
            time.sleep(0.1)
        return None

    # -- input --------------------------------------------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.screen.feed(f"\r\n[cannot send: {describe(exc)[0]}]\r\n")

    def send_line(self) -> None:
        line = self.input.text()
        self.input.clear()
        self.send_bytes(line.encode() + b"\r")

    def _resized(self, cols: int, rows: int) -> None:
        if self.sock is None or not self.exec_id or self.dc is None:
            return
        dc, eid = self.dc, self.exec_id

        def resize() -> None:
            dc.api.exec_resize(eid, height=rows, width=cols)

        workers.run_task(
            resize, on_done=lambda _r: self.sizes_sent.append((cols, rows)), on_failed=lambda _e: None
        )

    # -- output -------------------------------------------------------------------------------------------
    def _output(self, text: str) -> None:
        if text == READY:
            self.input.setEnabled(True)
            self.screen.setFocus()
            return
        if not self._sized_after_output:
            # The first output proves the process and its pty exist. A resize the engine got before that was
            # dropped (in the VM, top drew 57 columns), and the widget may have been laid out meanwhile.
            self._sized_after_output = True
            self._resized(*self.screen.grid_size())
        self.screen.feed(text)

    def _ended(self, error: str) -> None:
        if error:
            self.screen.feed(f"\r\n[shell ended: {error}]\r\n")
        self.input.setEnabled(False)
        self.sock = None

    def contents(self) -> str:
        return self.screen.term.text()

    def stop(self) -> None:
        if self.thread is not None:
            workers.retire(self.thread)
            self.thread = None
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.input.setEnabled(False)

    def clear(self, why: str = "") -> None:
        self.stop()
        self.screen.reset()
        self.title.setText(why)
        self.open_button.setEnabled(False)
