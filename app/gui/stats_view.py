"""The Stats tab: live CPU, memory, network and block I/O charts of one container, drawn with QPainter from
the engine's stats stream (`GET /containers/{id}/stats`, one sample a second) read on a stream thread."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from pymachine.hostvm.units import human_size

from . import workers
from .stats import StatsHistory
from .workers import StreamThread


def _percent(v: float) -> str:
    return f"{v:.1f} %"


def _rate(v: float) -> str:
    return f"{human_size(int(v))}/s"


class Chart(QWidget):
    """One or two series as lines over the last N samples, with the latest value in the title."""

    def __init__(
        self,
        title: str,
        series: Sequence[tuple[str, str, str]],  # (key, label, colour)
        fmt: Callable[[float], str],
        ceiling: Callable[[], float] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.title, self.series, self.fmt, self.ceiling = title, list(series), fmt, ceiling
        self.history: StatsHistory | None = None
        self.setMinimumSize(160, 70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def caption(self) -> str:
        if self.history is None:
            return self.title
        parts = []
        for key, label, _c in self.series:
            pts = self.history.points[key]
            if pts:
                parts.append(f"{label} {self.fmt(pts[-1])}" if label else self.fmt(pts[-1]))
        return f"{self.title}: {'  '.join(parts)}" if parts else self.title

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        p.setPen(pal.text().color())
        fm = p.fontMetrics()
        p.drawText(
            QRectF(4, 0, self.width() - 8, fm.height() + 4), Qt.AlignmentFlag.AlignLeft, self.caption()
        )
        area = QRectF(4, fm.height() + 6, self.width() - 8, self.height() - fm.height() - 10)
        grid = QColor(pal.mid().color())
        p.setPen(QPen(grid, 1))
        p.drawRect(area)
        if self.history is None:
            return
        size = self.history.size
        # headroom above the highest point, so a flat line does not sit on the frame
        top = 1.25 * max([0.8, *(max(self.history.points[k], default=0.0) for k, _l, _c in self.series)])
        if self.ceiling is not None and self.ceiling() > 0:
            top = max(top, self.ceiling()) if self.ceiling() < top * 4 else top
        p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
        p.drawLine(QPointF(area.left(), area.center().y()), QPointF(area.right(), area.center().y()))
        p.setPen(pal.placeholderText().color())
        p.drawText(
            area.adjusted(2, 1, -2, -1),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
            self.fmt(top),
        )
        for key, _label, colour in self.series:
            pts = list(self.history.points[key])
            if len(pts) < 2:
                continue
            path = QPainterPath()
            for i, v in enumerate(pts):
                x = area.right() - (len(pts) - 1 - i) * area.width() / (size - 1)
                y = area.bottom() - min(1.0, v / top) * area.height()
                path.moveTo(x, y) if i == 0 else path.lineTo(x, y)
            p.setPen(QPen(QColor(colour), 2))
            p.drawPath(path)


class StatsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Select a running container to see its CPU, memory, network and disk use.")
        self.title.setWordWrap(True)
        self.history = StatsHistory()
        self.charts = {
            "cpu": Chart("CPU", [("cpu", "", "#2463eb")], _percent),
            "memory": Chart(
                "Memory",
                [("memory", "", "#9334e6")],
                lambda v: human_size(int(v)),
                lambda: float(self.history.mem_limit),
            ),
            "network": Chart("Network", [("net_rx", "in", "#188038"), ("net_tx", "out", "#e37400")], _rate),
            "disk": Chart(
                "Disk", [("blk_read", "read", "#188038"), ("blk_write", "write", "#d93025")], _rate
            ),
        }
        grid = QGridLayout()
        for i, chart in enumerate(self.charts.values()):
            grid.addWidget(chart, i // 2, i % 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addLayout(grid, 1)
        self.thread: StreamThread | None = None
        self.container_id = ""
        self.samples = 0

    def show_container(self, dc: Any, container_id: str, name: str) -> None:
        if container_id == self.container_id and self.thread is not None:
            return
        self.clear()
        self.container_id = container_id
        self.title.setText(f"Resource use of {name} (one sample a second)")
        for chart in self.charts.values():
            chart.history = self.history

        def produce(emit: Callable[[str], None], stopped: Callable[[], bool]) -> None:
            for raw in dc.api.stats(container_id, stream=True, decode=True):
                if stopped():
                    break
                emit(json.dumps(raw))

        self.thread = StreamThread(produce)
        self.thread.chunk.connect(self._sample)
        self.thread.ended.connect(self._ended)
        self.thread.start()

    def _sample(self, text: str) -> None:
        self.history.add(json.loads(text))
        self.samples += 1
        for chart in self.charts.values():
            chart.update()

    def _ended(self, error: str) -> None:
        if error:
            self.title.setText(f"{self.title.text()} — the stats stream ended: {error}")

    def clear(
        self, why: str = "Select a running container to see its CPU, memory, network and disk use."
    ) -> None:
        if self.thread is not None:
            workers.retire(self.thread)
            self.thread = None
        self.container_id = ""
        self.samples = 0
        self.history = StatsHistory()
        self.title.setText(why)
        for chart in self.charts.values():
            chart.history = None
            chart.update()
