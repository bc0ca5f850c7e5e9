"""What the Containers, Images, Volumes and Apps tabs share: the engine client of the machine they show (made
on the GUI thread, handed to workers), their rows, the empty-state sentence, following the selected machine
(`set_machine`), the refresh timer, bulk verbs over several selected rows, and the right-click menu."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm.errors import PymachineError

from . import workers
from .common import ErrorBanner, describe, empty_state
from .machine_state import MachineView

NO_MACHINE = "No machine selected — create one on the Machines tab (Ctrl+1, then Ctrl+N)."
REFRESH_MS = 10000


def as_view(name: str, view: MachineView | bool | None) -> MachineView | None:
    """A bool stands for an engine named on the command line (--engine): running or not."""
    if isinstance(view, bool):
        return MachineView(name, "running" if view else "stopped", "")
    return view


@dataclass(frozen=True)
class BulkResult:
    """What a verb did to several items: the ones done and each failure with its item."""

    verb: str
    noun: str  # "container", "image", "volume"
    done: list[str]
    failed: list[tuple[str, BaseException]]

    def summary(self) -> str:
        n = len(self.done) + len(self.failed)
        things = f"{n} {self.noun}{'s' if n != 1 else ''}"
        if not self.failed:
            return f"{self.verb.capitalize()}: {things} done."
        return f"{self.verb.capitalize()}: {len(self.failed)} of {things} failed."

    def details(self) -> str:
        """Every failure on its own line, in words (message — hint), not the first one only."""
        lines = []
        for item, exc in self.failed:
            message, hint = describe(exc)
            lines.append(f"{item}: {message}" + (f" — {hint}" if hint else ""))
        return "\n".join(lines)

    def error(self) -> BaseException | None:
        """For the error banner: a single item's own error, or the count as the message and one line per
        failed item as the hint."""
        if not self.failed:
            return None
        if len(self.failed) == 1 and not self.done:
            return self.failed[0][1]
        return PymachineError(self.summary(), hint=self.details())


def run_each(verb: str, noun: str, items: Sequence[tuple[str, Callable[[], Any]]]) -> BulkResult:
    """Run every item's work (on a worker thread), carrying on past failures and collecting them."""
    done: list[str] = []
    failed: list[tuple[str, BaseException]] = []
    for label, work in items:
        try:
            work()
            done.append(label)
        except Exception as exc:  # noqa: BLE001 - said per item, in words
            failed.append((label, exc))
    return BulkResult(verb, noun, done, failed)


class EngineTab:
    """Mixed into a QWidget that has `dc`, `client_factory`, `table` (a DataTable), `empty` (a QLabel),
    `stack` (a QStackedWidget), `title` (a QLabel) and `refresh()`; `NOUN` titles it ("Volumes")."""

    NOUN = ""
    _refreshing = False
    working = False
    machine: str = ""
    view: MachineView | None = None
    usable: bool = False
    dc: Any
    client_factory: Any
    table: Any
    empty: Any
    stack: Any
    title: Any

    def lay_out(self, bar: QHBoxLayout, details: QWidget) -> None:
        """Title bar, the table (or the empty sentence) over `details`, a status line, the error banner."""
        self.empty = empty_state("")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.stack)
        split.addWidget(details)
        self.status = QLabel(wordWrap=True)
        self.banner = ErrorBanner()
        lay = QVBoxLayout(self)  # type: ignore[arg-type]
        lay.addLayout(bar)
        lay.addWidget(split, 1)
        lay.addWidget(self.status)
        lay.addWidget(self.banner)

    def start_timer(self, interval_ms: int = REFRESH_MS) -> QTimer:
        self.timer = QTimer(self, interval=interval_ms)  # type: ignore[call-overload]
        self.timer.timeout.connect(self.refresh)  # type: ignore[attr-defined]
        self.timer.start()
        return self.timer

    def set_machine(self, name: str, view: MachineView | bool | None) -> None:
        """Show `name` in the state `view` (a bool: running or not, for an engine from the command line).
        Another machine, or the engine becoming usable or not, resets what the tab holds (`reset_engine`)."""
        view = as_view(name, view)
        usable = bool(name) and view is not None and view.engine_usable
        changed = (name, usable) != (self.machine, self.usable)
        if changed:
            self.reset_engine()
        self.machine, self.view, self.usable = name, view, usable
        self.title.setText(f"{self.NOUN} on '{name}'" if name else self.NOUN)
        if not name or view is None:
            self._empty(NO_MACHINE)
        elif not usable:
            self._empty(view.sentence(), start=view.startable)
        elif changed or self.dc is None:
            self.refresh()  # type: ignore[attr-defined]
        self._update_buttons()  # type: ignore[attr-defined]

    # -- rows from the engine (Containers has its own: stats and verbs in flight) ---------------------------
    def fetch(self, dc: Any, machine: str) -> list[dict[str, Any]]:
        """The rows, read on a worker thread from the engine client `dc` (no widget touched here)."""
        raise NotImplementedError

    def empty_text(self, machine: str) -> str:
        """What the tab says when the engine has no rows of its kind, and how to make one."""
        raise NotImplementedError

    def filled(self) -> None:
        """After new rows are shown (the detail pane and buttons follow them)."""
        self._update_buttons()  # type: ignore[attr-defined]

    def refresh(self) -> None:
        if not self.usable or self._refreshing:
            return
        self._refreshing = True
        dc, machine = self.client(), self.machine
        workers.run_task(
            lambda: self.fetch(dc, machine),
            on_done=lambda rows: self._fill(rows, machine),
            on_failed=lambda exc: self._refresh_failed(exc, machine),
        )

    def _refresh_failed(self, exc: BaseException, machine: str) -> None:
        self._refreshing = False
        if machine != self.machine or not self.usable:
            return  # about a machine no longer shown, or one that is stopping: not an error to show
        self.dc = None
        self._unreachable(machine, exc)

    def _fill(self, rows: list[dict[str, Any]], machine: str) -> None:
        self._refreshing = False
        if machine != self.machine or not self.usable:
            return
        self.table.set_rows(rows)
        if rows:
            self.stack.setCurrentWidget(self.table)
        else:
            self._empty(self.empty_text(machine))
        self.filled()

    def reset_engine(self) -> None:
        """Forget the engine and its rows (Containers also closes its streams)."""
        self.dc = None
        self.table.set_rows([])

    # set by the window: starts a machine the way its Start button does (the Machines tab's verb, progress)
    start_machine: Callable[[str], None] | None = None

    def _empty(self, text: str, start: bool = False) -> None:
        """The sentence instead of the table; for a machine that is down, a "Start" link right there (Docker
        Desktop's stopped engine offers its Start button where the containers would be)."""
        if start and self.start_machine is not None:
            if not getattr(self, "_start_link", False):
                self.empty.linkActivated.connect(self._start_link_clicked)
                self._start_link = True
            link = f'<a href="start">Start {html.escape(self.machine)}</a>'
            self.empty.setTextFormat(Qt.TextFormat.RichText)
            self.empty.setText(f"{html.escape(text)}<br><br>{link}")
        else:
            self.empty.setTextFormat(Qt.TextFormat.PlainText)
            self.empty.setText(text)
        self.stack.setCurrentWidget(self.empty)

    def _start_link_clicked(self, _href: str) -> None:
        if self.start_machine is not None and self.machine and self.view is not None and self.view.startable:
            self.start_machine(self.machine)

    def _unreachable(self, machine: str, exc: BaseException) -> None:
        message, hint = describe(exc)
        self._empty(f"Cannot reach the engine of '{machine}': {message}" + (f"\n{hint}" if hint else ""))

    def client(self) -> Any:
        if self.dc is None:
            self.dc = self.client_factory(self.machine)
        return self.dc

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.table.rows()

    def run_work(self, text: str, work: Any, said: Any, on_progress: Any = None) -> None:
        """A verb of the tab on a worker: `text` while it runs, `said(result)` once done; a failure (or each
        failed item of a BulkResult) in the error banner; then a refresh."""
        self.working = True
        self.banner.hide()
        self.status.setText(text)
        self._update_buttons()  # type: ignore[attr-defined]

        def finish(result: Any, exc: BaseException | None) -> None:
            self.working = False
            bulk = isinstance(result, BulkResult)
            if bulk:
                exc = result.error()
            self.status.setText(said(result) if exc is None or bulk else "")
            if exc is not None:
                self.banner.show_error(exc)
            self._update_buttons()  # type: ignore[attr-defined]
            self.refresh()

        workers.run_task(
            work,
            on_done=lambda r: finish(r, None),
            on_failed=lambda e: finish(None, e),
            on_progress=on_progress,
        )

    # -- several rows at once -----------------------------------------------------------------------------
    def confirm(self, text: str) -> bool:
        return QMessageBox.question(self, "pymachine", text) == QMessageBox.StandardButton.Yes  # type: ignore[arg-type]

    def selected(self) -> list[dict[str, Any]]:
        return self.table.selected()

    def run_bulk(
        self,
        verb: str,
        noun: str,
        items: Sequence[tuple[str, Callable[[], Any]]],
        finished: Callable[[BulkResult], None],
    ) -> None:
        """Run each item's work on one worker, in order; `finished` gets every success and failure."""
        work = list(items)
        workers.run_task(
            lambda: run_each(verb, noun, work),
            on_done=finished,
            on_failed=lambda exc: finished(BulkResult(verb, noun, [], [("all", exc)])),
        )

    # -- right-click menu ---------------------------------------------------------------------------------
    def menu_actions(self) -> list[tuple[str, Callable[[], Any], bool]]:
        """(label, slot, enabled) for the selected rows; '' as a label is a separator."""
        return []

    def context_menu(self) -> QMenu:
        menu = QMenu(self)  # type: ignore[arg-type]
        for label, slot, enabled in self.menu_actions():
            if not label:
                menu.addSeparator()
                continue
            action = QAction(label, menu)
            action.setEnabled(enabled)
            action.triggered.connect(lambda _c=False, s=slot: s())
            menu.addAction(action)
        return menu

    def show_context_menu(self, pos: QPoint) -> None:
        """Pops up (not exec: no nested event loop; the menu stays reachable as `self.menu`)."""
        self.menu = self.context_menu()
        if not self.menu.isEmpty():
            self.menu.popup(pos)
