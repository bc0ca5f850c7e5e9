"""Images of the selected machine's engine: list with sizes, pull with a progress bar, remove, and build from
a folder with its build output. The builtin images (`pymachine/busybox`, `pymachine/debian`) are built on the
host and loaded, as `pymachine pull` does: this machine has no public registry."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import containers, images_io
from pymachine.hostvm.progress import BuildOutput, LayerProgress
from pymachine.hostvm.units import human_size

from . import workers
from .common import ErrorBanner, empty_state, mono_font
from .containers_panel import ClientFactory, default_client

COLUMNS = ("Repository", "Tag", "Image ID", "Size", "Created")


def list_images(dc: Any) -> list[dict[str, Any]]:
    with containers.api_errors():
        return [row for img in dc.images.list() for row in containers.image_summary(img)]


class ImagesPanel(QWidget):
    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
        self.machine, self.machine_running = "", False
        self.dc: Any = None
        self.rows: list[dict[str, Any]] = []
        self.title = QLabel(styleSheet="font-weight: bold;")
        self.reference = QLineEdit(
            placeholderText="image to pull, e.g. pymachine/busybox or localhost:5000/app:1"
        )
        self.reference.returnPressed.connect(self.pull)
        self.pull_button = QPushButton("&Pull")
        self.pull_button.clicked.connect(self.pull)
        self.remove_button = QPushButton("Remo&ve")
        self.remove_button.clicked.connect(self.remove)
        self.build_button = QPushButton("&Build from folder…")
        self.build_button.clicked.connect(self.choose_and_build)
        self.tag = QLineEdit(placeholderText="tag for the build, e.g. myapp:dev")
        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addWidget(self.reference, 2)
        top.addWidget(self.pull_button)
        top.addWidget(self.remove_button)
        top2 = QHBoxLayout()
        build_label = QLabel("Build an image from a folder with a Dockerfile, tagged:")
        build_label.setBuddy(self.tag)
        top2.addWidget(build_label)
        top2.addWidget(self.tag, 1)
        top2.addWidget(self.build_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.empty = empty_state("")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        self.progress = QProgressBar()
        self.progress.hide()
        self.status = QLabel()
        self.output = QPlainTextEdit(readOnly=True, placeholderText="Build output appears here.")
        self.output.setFont(mono_font())
        self.output.setMaximumHeight(180)
        self.banner = ErrorBanner()
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addLayout(top2)
        lay.addWidget(self.stack, 1)
        lay.addWidget(self.status)
        lay.addWidget(self.progress)
        lay.addWidget(self.output)
        lay.addWidget(self.banner)
        self._refreshing = False
        self.working = False
        self.timer = QTimer(self, interval=10000)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.set_machine("", False)

    def set_machine(self, name: str, running: bool) -> None:
        if (name, running) != (self.machine, self.machine_running):
            self.dc = None
        self.machine, self.machine_running = name, running
        self.title.setText(f"Images on '{name}'" if name else "Images")
        if not name:
            self._empty("No machine selected — create one on the Machines tab (Ctrl+1, then Ctrl+N).")
        elif not running:
            self._empty(f"Machine '{name}' is not running — start it on the Machines tab to see its images.")
        else:
            self.refresh()
        self._update_buttons()

    def _update_buttons(self) -> None:
        ok = bool(self.machine and self.machine_running and not self.working)
        for w in (self.pull_button, self.build_button, self.reference, self.tag):
            w.setEnabled(ok)
        self.remove_button.setEnabled(ok and self.current() is not None)

    def _empty(self, text: str) -> None:
        self.empty.setText(text)
        self.stack.setCurrentWidget(self.empty)

    def client(self) -> Any:
        if self.dc is None:
            self.dc = self.client_factory(self.machine)
        return self.dc

    def refresh(self) -> None:
        if not self.machine or not self.machine_running or self._refreshing:
            return
        self._refreshing = True
        workers.run_task(
            lambda: list_images(self.client()), on_done=self._fill, on_failed=self._refresh_failed
        )

    def _refresh_failed(self, exc: BaseException) -> None:
        self._refreshing = False
        self.dc = None
        self._empty(f"Cannot reach the engine of '{self.machine}': {exc}")

    def _fill(self, rows: list[dict[str, Any]]) -> None:
        self._refreshing = False
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            cells = (
                r["Repository"],
                r["Tag"],
                r["ID"][:12],
                human_size(int(r["Size"] or 0)),
                str(r["Created"])[:19].replace("T", " "),
            )
            for col, text in enumerate(cells):
                self.table.setItem(i, col, QTableWidgetItem(text))
        if rows:
            self.stack.setCurrentWidget(self.table)
        else:
            self._empty(
                "No images yet — type pymachine/busybox above and press Pull, or build one from a folder."
            )
        self._update_buttons()

    def current(self) -> dict[str, Any] | None:
        sel = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.rows[sel[0].row()] if sel and sel[0].row() < len(self.rows) else None

    def select(self, repository: str) -> bool:
        for i, r in enumerate(self.rows):
            if r["Repository"] == repository:
                self.table.selectRow(i)
                return True
        return False

    # -- verbs --------------------------------------------------------------------------------------------
    def _start(self, text: str) -> None:
        self.working = True
        self.banner.hide()
        self.status.setText(text)
        self.progress.setRange(0, 0)
        self.progress.show()
        self._update_buttons()

    def _finish(self, text: str) -> None:
        self.working = False
        self.progress.hide()
        self.status.setText(text)
        self._update_buttons()
        self.refresh()

    def _fail(self, exc: BaseException) -> None:
        self._finish("")
        self.banner.show_error(exc)

    def _pull_progress(self, message: Any) -> None:
        """LayerProgress values fill the bar (every announced layer counts, so it never hits 100 early);
        anything else is a note for the status line."""
        if not isinstance(message, LayerProgress):
            self.status.setText(str(message))
            return
        if message.finished:
            self.layers[message.layer] = 1.0
        elif message.status == "Downloading" and message.total:
            self.layers[message.layer] = min(1.0, message.current / message.total)
        else:
            self.layers.setdefault(message.layer, 0.0)
        self.progress.setRange(0, 100)
        self.progress.setValue(int(100 * sum(self.layers.values()) / len(self.layers)))
        if message.status not in ("Downloading", "Extracting"):
            self.status.setText(str(message))

    def pull(self) -> None:
        ref = self.reference.text().strip()
        if not ref or self.working:
            return
        self._start(f"Pulling {ref}…")
        dc = self.client()
        self.layers: dict[str, float] = {}  # layer → downloaded fraction
        workers.run_task(
            lambda progress: images_io.pull(dc, ref, progress),
            on_done=lambda tags: self._finish(f"Pulled {', '.join(tags)}"),
            on_failed=self._fail,
            on_progress=self._pull_progress,
        )

    def confirm(self, text: str) -> bool:
        return QMessageBox.question(self, "pymachine", text) == QMessageBox.StandardButton.Yes

    def remove(self) -> None:
        r = self.current()
        if r is None or self.working:
            return
        ref = f"{r['Repository']}:{r['Tag']}" if r["Repository"] != "<none>" else r["ID"]
        if not self.confirm(f"Remove image {ref}?"):
            return
        self._start(f"Removing {ref}…")
        dc = self.client()

        def work() -> None:
            with containers.api_errors(f"removing {ref}"):
                dc.images.remove(ref)

        workers.run_task(work, on_done=lambda _r: self._finish(f"Removed {ref}"), on_failed=self._fail)

    def choose_and_build(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with a Dockerfile")
        if folder:
            self.build(folder)

    def build(self, folder: str) -> None:
        if self.working:
            return
        tag = self.tag.text().strip()
        self.output.clear()
        self._start(f"Building {folder}…")
        dc = self.client()
        workers.run_task(
            lambda progress: images_io.build(
                dc, {"path": folder, "tag": tag or None, "rm": True, "decode": True}, progress
            ),
            on_done=lambda image_id: self._finish(f"Built {tag or image_id[:19]}"),
            on_failed=self._fail,
            on_progress=self._append_output,
        )

    def _append_output(self, message: Any) -> None:
        text = message.text if isinstance(message, BuildOutput) else f"{message}\n"
        cursor = self.output.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        self.output.verticalScrollBar().setValue(self.output.verticalScrollBar().maximum())
