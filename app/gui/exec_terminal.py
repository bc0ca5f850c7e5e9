"""A line-based terminal: `sh` in the container over an exec attach socket (no tty; frames demultiplexed).

Each line typed is sent with a newline; output appears as it arrives. Enough for looking around a container;
full-screen programs need `pymachine exec -it` in a real terminal.
"""

from __future__ import annotations

import select
import time
from typing import Any

from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm.images_io import demux

from . import workers
from .common import mono_font
from .workers import StreamThread

READY = "\x00ready\x00"  # in-band marker from the pump thread: the exec socket is open


class ExecTerminal(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.output = QPlainTextEdit(readOnly=True)
        self.output.setFont(mono_font())
        self.output.setPlaceholderText("Select a running container and click Open shell.")
        self.input = QLineEdit(placeholderText="command, then Enter (e.g. ls /, ps, cat /etc/hostname)")
        self.input.setFont(mono_font())
        self.input.returnPressed.connect(self.send_line)
        self.input.setEnabled(False)
        self.title = QLabel()
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
        lay.addWidget(self.output, 1)
        lay.addWidget(self.input)
        self.sock: Any = None
        self.thread: StreamThread | None = None
        self.dc: Any = None
        self.exec_id = ""

    def open(self, dc: Any, container_id: str, name: str, shell: str = "sh") -> None:
        """Create the exec and pump its socket on a thread: nothing here waits on the engine."""
        self.stop()
        self.dc = dc
        self.output.clear()
        self.title.setText(f"Shell in {name}")
        self._append(f"[starting {shell} in {name}…]\n")
        self.thread = StreamThread(lambda emit, stopped: self._pump(dc, container_id, shell, emit, stopped))
        self.thread.chunk.connect(self._append)
        self.thread.ended.connect(self._ended)
        self.thread.start()

    def _pump(self, dc: Any, container_id: str, shell: str, emit: Any, stopped: Any) -> None:
        self.exec_id = dc.api.exec_create(container_id, [shell], stdin=True, tty=False)["Id"]
        sock = dc.api.exec_start(self.exec_id, tty=False, socket=True)
        self.sock = getattr(sock, "_sock", sock)
        emit(READY)
        buf = b""
        try:
            while not stopped():
                ready, _, _ = select.select([self.sock], [], [], 0.2)
                if not ready:
                    continue
                data = self.sock.recv(65536)
                if not data:
                    break
                frames, buf = demux(buf + data)
                for _stream, payload in frames:
                    emit(payload.decode(errors="replace"))
        finally:
            code = self._exit_code(dc)
            if not stopped():
                emit(f"\n[shell ended{f' with exit code {code}' if code is not None else ''}]\n")

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

    def send_line(self) -> None:
        line = self.input.text()
        if self.sock is None:
            return
        self._append(f"$ {line}\n")
        self.input.clear()
        try:
            self.sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            self._append(f"\n[cannot send: {exc}]\n")

    def _append(self, text: str) -> None:
        if text == READY:
            self.input.setEnabled(True)
            self.input.setFocus()
            return
        cursor = self.output.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        self.output.verticalScrollBar().setValue(self.output.verticalScrollBar().maximum())

    def _ended(self, error: str) -> None:
        if error:
            self._append(f"\n[shell ended: {error}]\n")
        self.input.setEnabled(False)
        self.sock = None

    def contents(self) -> str:
        return self.output.toPlainText()

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
        self.output.clear()
        self.title.setText(why)
        self.open_button.setEnabled(False)
