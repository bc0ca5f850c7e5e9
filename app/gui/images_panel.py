"""Images of the selected machine's engine: list with sizes, pull with a progress bar, remove, and build from
a folder with its build output. The builtin images (`pymachine/busybox`, `pymachine/debian`) are built on the
host and loaded, as `pymachine pull` does: this machine has no public registry."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import containers, images_io
from pymachine.hostvm.progress import BuildOutput, LayerProgress
from pymachine.hostvm.units import human_size

from . import workers
from .common import ErrorBanner, empty_state, mono_font, title_label
from .containers_panel import ClientFactory, default_client
from .engine_panel import BulkResult, EngineTab
from .table_model import Column, DataTable


def created(value: Any) -> str:
    """`Created` as a date, or '—' for the zero time some engines give an image built without one."""
    text = str(value or "")[:19].replace("T", " ")
    return "—" if not text or text.startswith(("0001-", "1970-01-01")) else text


COLUMNS = (
    Column("Repository", lambda r: r["Repository"], width=220),
    Column("Tag", lambda r: r["Tag"], width=90),
    Column("Image ID", lambda r: r["ID"].removeprefix("sha256:")[:12], width=110),
    Column("Size", lambda r: human_size(int(r["Size"] or 0)), lambda r: int(r["Size"] or 0), width=80),
    Column("Created", lambda r: created(r["Created"]), lambda r: str(r["Created"] or ""), width=150),
)


def image_key(r: dict[str, Any]) -> str:
    return f"{r['ID']}|{r['Repository']}|{r['Tag']}"


def reference(r: dict[str, Any]) -> str:
    """What `docker rmi` takes for a row: repository:tag, or the ID of an untagged image."""
    return f"{r['Repository']}:{r['Tag']}" if r["Repository"] != "<none>" else r["ID"]


class Cancelled(Exception):
    """Raised inside a pull or build's progress callback once the person pressed Cancel."""


def list_images(dc: Any) -> list[dict[str, Any]]:
    with containers.api_errors():
        return [row for img in dc.images.list() for row in containers.image_summary(img)]


class ImagesPanel(EngineTab, QWidget):
    NOUN = "Images"

    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
        self.dc: Any = None
        self.title = title_label()
        self.reference = QLineEdit(
            placeholderText="image to pull, e.g. pymachine/busybox or localhost:5000/app:1"
        )
        self.reference.returnPressed.connect(self.pull)
        self.pull_button = QPushButton("&Pull")
        self.pull_button.clicked.connect(self.pull)
        self.remove_button = QPushButton("Remo&ve")
        self.remove_button.clicked.connect(self.remove)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
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

        self.table = DataTable(COLUMNS, image_key, "Search images", multi=True)
        self.table.view.selectionModel().selectionChanged.connect(lambda *_a: self._update_buttons())
        self.table.menu_requested.connect(self.show_context_menu)
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
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        lay.addLayout(progress_row)
        lay.addWidget(self.output)
        lay.addWidget(self.banner)
        self.working = False
        self._job = 0  # the pull/build under way; a cancelled one's late answer is dropped
        self._cancel: dict[str, bool] = {}
        self.start_timer()
        self.set_machine("", False)

    def _update_buttons(self) -> None:
        ok = bool(self.machine and self.usable and not self.working)
        for w in (self.pull_button, self.build_button, self.reference, self.tag):
            w.setEnabled(ok)
        self.remove_button.setEnabled(ok and bool(self.table.selected_keys()))

    def menu_actions(self) -> list[tuple[str, Any, bool]]:
        ok = bool(self.usable and not self.working)
        picked = self.selected()
        ids = [r["ID"].removeprefix("sha256:")[:12] for r in picked]
        refs = [reference(r) for r in picked]
        n = len(picked)
        return [
            ("Copy ID", lambda: QGuiApplication.clipboard().setText("\n".join(ids)), bool(n)),
            ("Copy name", lambda: QGuiApplication.clipboard().setText("\n".join(refs)), bool(n)),
            ("Pull again", self._pull_selected, ok and n == 1 and picked[0]["Repository"] != "<none>"),
            ("", lambda: None, True),
            ("Remove…" if n == 1 else f"Remove {n} images…", self.remove, ok and bool(n)),
        ]

    def _pull_selected(self) -> None:
        picked = self.selected()
        if len(picked) == 1:
            self.reference.setText(reference(picked[0]))
            self.pull()

    def fetch(self, dc: Any, machine: str) -> list[dict[str, Any]]:
        return list_images(dc)

    def empty_text(self, machine: str) -> str:
        return "No images yet — type pymachine/busybox above and press Pull, or build one from a folder."

    def current(self) -> dict[str, Any] | None:
        return self.table.current()

    def select(self, repository: str) -> bool:
        for r in self.rows:
            if r["Repository"] == repository:
                return self.table.select_key(image_key(r))
        return False

    # -- verbs --------------------------------------------------------------------------------------------
    def _start(self, text: str, cancellable: bool = False) -> int:
        self._job += 1
        self.cancel_button.setVisible(cancellable)
        self.working = True
        self.banner.hide()
        self.status.setText(text)
        self.progress.setRange(0, 0)
        self.progress.show()
        self._update_buttons()
        return self._job

    def _finish(self, text: str) -> None:
        self.working = False
        self.progress.hide()
        self.cancel_button.hide()
        self.status.setText(text)
        self._update_buttons()
        self.refresh()

    def _fail(self, exc: BaseException) -> None:
        self._finish("")
        self.banner.show_error(exc)

    def _cancellable(self, job: int, step: Any) -> Any:
        """A progress callback that stops the work at its next step once Cancel was pressed."""
        cancel = self._cancel

        def say(value: Any) -> None:
            if cancel.get(str(job)):
                raise Cancelled()
            step(value)

        return say

    def _answer(self, job: int, then: Any) -> Any:
        """`then`, unless the job was cancelled (its late answer or failure is dropped)."""
        return lambda value: None if self._cancel.pop(str(job), False) else then(value)

    def cancel(self) -> None:
        """Give the window back at once; the worker stops at its next progress step (or when its request
        fails) and its answer is dropped."""
        if not self.working:
            return
        self._cancel[str(self._job)] = True
        self._finish("Cancelled.")

    def _pull_progress(self, message: Any) -> None:
        """LayerProgress values fill the bar (every announced layer counts, so it never hits 100 early);
        anything else is a note for the status line."""
        if not self.working:
            return  # a cancelled pull's late step
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
        job = self._start(f"Pulling {ref}…", cancellable=True)
        dc = self.client()
        self.layers: dict[str, float] = {}  # layer → downloaded fraction
        workers.run_task(
            lambda progress: images_io.pull(dc, ref, self._cancellable(job, progress)),
            on_done=self._answer(job, lambda tags: self._finish(f"Pulled {', '.join(tags)}")),
            on_failed=self._answer(job, self._fail),
            on_progress=self._pull_progress,
        )

    def remove(self) -> None:
        """Remove the selected images after one confirmation; every one the engine refuses is listed."""
        picked = self.selected()
        if not picked or self.working:
            return
        refs = list(dict.fromkeys(reference(r) for r in picked))
        what = f"image {refs[0]}" if len(refs) == 1 else f"{len(refs)} images ({', '.join(refs)})"
        if not self.confirm(f"Remove {what}?"):
            return
        self._start(f"Removing {refs[0] if len(refs) == 1 else f'{len(refs)} images'}…")
        dc = self.client()

        def remover(ref: str) -> Any:
            def work() -> None:
                images_io.remove(dc, ref)

            return work

        if len(refs) == 1:
            workers.run_task(
                remover(refs[0]), on_done=lambda _r: self._finish(f"Removed {refs[0]}"), on_failed=self._fail
            )
            return

        def finished(result: BulkResult) -> None:
            self._finish(result.summary())
            if result.failed:
                self.banner.show_error(result.error())  # type: ignore[arg-type]

        self.run_bulk("remove", "image", [(r, remover(r)) for r in refs], finished)

    def choose_and_build(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with a Dockerfile")
        if folder:
            self.build(folder)

    def build(self, folder: str) -> None:
        if self.working:
            return
        tag = self.tag.text().strip()
        self.output.clear()
        job = self._start(f"Building {folder}…", cancellable=True)
        dc = self.client()
        request = {"path": folder, "tag": tag or None, "rm": True, "decode": True}
        workers.run_task(
            lambda progress: images_io.build(dc, request, self._cancellable(job, progress)),
            on_done=self._answer(job, lambda image_id: self._finish(f"Built {tag or image_id[:19]}")),
            on_failed=self._answer(job, self._fail),
            on_progress=self._append_output,
        )

    def _append_output(self, message: Any) -> None:
        if not self.working:
            return
        text = message.text if isinstance(message, BuildOutput) else f"{message}\n"
        cursor = self.output.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        self.output.verticalScrollBar().setValue(self.output.verticalScrollBar().maximum())
