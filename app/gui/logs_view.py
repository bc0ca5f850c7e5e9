"""A container's log, following live (stdout and stderr interleaved as the engine sends them)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import workers
from .common import mono_font
from .workers import StreamThread

MAX_BLOCKS = 20000  # lines kept in the view; older ones scroll away


class LogsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setFont(mono_font())
        self.text.setMaximumBlockCount(MAX_BLOCKS)
        self.text.setPlaceholderText("Select a container to see its log.")
        self.follow = QCheckBox("&Follow", checked=True)
        self.title = QLabel()
        clear = QPushButton("Clear")
        clear.clicked.connect(self.text.clear)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.follow)
        top.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.text)
        self.thread: StreamThread | None = None
        self._stream: Any = None

    def show_container(self, dc: Any, container_id: str, name: str) -> None:
        self.stop()
        self.text.clear()
        self.title.setText(f"Log of {name}")
        self.text.setPlaceholderText(f"{name} has written nothing yet; new lines appear here as they come.")
        holder: dict[str, Any] = {}

        def produce(emit, stopped) -> None:  # type: ignore[no-untyped-def]
            # tail then follow, as `docker logs -f`; close() on the stream unblocks the read when stopping
            stream = dc.api.logs(container_id, stream=True, follow=True, stdout=True, stderr=True, tail=2000)
            holder["stream"] = stream
            for chunk in stream:
                if stopped():
                    break
                emit(chunk.decode(errors="replace"))

        self._holder = holder
        self.thread = StreamThread(produce)
        self.thread.chunk.connect(self._append)
        self.thread.ended.connect(self._ended)
        self.thread.start()

    def _append(self, text: str) -> None:
        bar = self.text.verticalScrollBar()
        at_end = bar.value() == bar.maximum()
        cursor = self.text.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        if self.follow.isChecked() and at_end:
            bar.setValue(bar.maximum())

    def _ended(self, error: str) -> None:
        if error:
            self._append(f"\n[log stream ended: {error}]\n")

    def contents(self) -> str:
        return self.text.toPlainText()

    def stop(self) -> None:
        if self.thread is None:
            return
        self.thread.requestInterruption()
        stream = getattr(self, "_holder", {}).get("stream")
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream
                pass
        workers.retire(self.thread)
        self.thread = None

    def clear(self, why: str = "Select a container to follow its log.") -> None:
        self.stop()
        self.text.clear()
        self.title.setText("")
        self.text.setPlaceholderText(why)
