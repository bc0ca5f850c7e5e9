"""Machines: state, CPUs/memory/disk, accelerator and engine link; create, start, stop, restart, delete.

Start shows the façade's staged progress (typed StageProgress values: step, total, name, state); a failure
shows its message, hint and a "Show log" button for the console log (or the host-agent log). State refreshes
from host-agent events and a slow poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import machines, paths
from pymachine.hostvm.progress import StageProgress, stage_from_fields
from pymachine.hostvm.status import MachineStatus, all_statuses
from pymachine.hostvm.units import binary_size

from . import workers
from .common import ErrorBanner, LogDialog, action_buttons, empty_state
from .create_dialog import CreateDialog
from .settings_panel import load_settings

COLUMNS = ("Name", "State", "CPUs", "Memory", "Disk", "Accelerator", "Driver", "Engine")
POLL_MS = 5000


class MachinesPanel(QWidget):
    selected = Signal(str)  # machine name ("" when none)
    changed = Signal(list)  # [Machine] after each refresh

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[Any] = []
        self.busy: dict[str, str] = {}  # machine → verb running on it
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.empty = empty_state(
            "No machines yet — click <b>Create</b> (Ctrl+N) to make one.<br>"
            "A machine is a small Linux VM that runs your containers."
        )
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)

        bar = QHBoxLayout()
        self.buttons = action_buttons(
            self,
            bar,
            "machine",
            (
                ("create", "&Create…", "Ctrl+N"),
                ("start", "&Start", "Ctrl+S"),
                ("stop", "S&top", "Ctrl+T"),
                ("restart", "&Restart", "Ctrl+R"),
                ("delete", "&Delete", "Delete"),
                ("log", "Show &log", "Ctrl+L"),
            ),
            self.act,
        )
        bar.addStretch(1)
        refresh = QPushButton("Refresh")
        refresh.setShortcut(QKeySequence("F5"))
        refresh.clicked.connect(self.refresh)
        bar.addWidget(refresh)

        self.progress = QProgressBar()
        self.progress.hide()
        self.progress_label = QLabel()
        self.banner = ErrorBanner()
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.stack, 1)
        lay.addWidget(self.progress_label)
        lay.addWidget(self.progress)
        lay.addWidget(self.banner)
        self.dialog: CreateDialog | None = None
        self.log_dialog: LogDialog | None = None
        self._refreshing = False
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self._update_buttons()
        self.refresh()

    # -- data ---------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        # repair=False: a refresh only looks; starting a dead host agent is the verbs' job
        workers.run_task(lambda: all_statuses(False), on_done=self._fill, on_failed=self._refresh_failed)

    def _refresh_failed(self, exc: BaseException) -> None:
        self._refreshing = False
        self.banner.show_error(exc)

    def _fill(self, rows: list[MachineStatus]) -> None:
        self._refreshing = False
        keep = self.current()
        self.rows = [st.machine for st in rows]
        self.table.setRowCount(len(rows))
        for i, st in enumerate(rows):
            m = st.machine
            state = self.busy.get(m.name) or st.state or m.state
            engine = "" if st.engine == "-" else st.engine  # the summary `pymachine list` shows
            cells = (
                m.name,
                state,
                str(m.cpus),
                binary_size(m.memory),
                binary_size(m.disk),
                m.accelerator or "—",
                m.driver,
                engine or "—",
            )
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setForeground(
                        Qt.GlobalColor.darkGreen if m.state == "running" else Qt.GlobalColor.gray
                    )
                self.table.setItem(i, col, item)
        self.stack.setCurrentWidget(self.table if rows else self.empty)
        names = [m.name for m in self.rows]
        if keep in names:
            self.table.selectRow(names.index(keep))
        elif names and not keep:
            self.table.selectRow(0)
        self._update_buttons()
        self.changed.emit(list(self.rows))

    def current(self) -> str:
        sel = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not sel or sel[0].row() >= len(self.rows):
            return ""
        return self.rows[sel[0].row()].name

    def machine(self, name: str) -> Any:
        return next((m for m in self.rows if m.name == name), None)

    def select(self, name: str) -> None:
        names = [m.name for m in self.rows]
        if name in names:
            self.table.selectRow(names.index(name))

    def _selection_changed(self) -> None:
        self._update_buttons()
        self.selected.emit(self.current())

    def _update_buttons(self) -> None:
        name = self.current()
        m = self.machine(name)
        running = m is not None and m.state == "running"
        idle = bool(name) and name not in self.busy
        self.buttons["start"].setEnabled(idle and not running)
        self.buttons["stop"].setEnabled(idle and running)
        self.buttons["restart"].setEnabled(idle and running)
        self.buttons["delete"].setEnabled(idle)
        mp = paths.machine(name) if name else None
        self.buttons["log"].setEnabled(bool(mp and (mp.console_log.exists() or mp.agent_log.exists())))

    # -- host-agent events --------------------------------------------------------------------------------
    def on_event(self, machine: str, event: Any) -> None:
        if event.type == "stage" and machine in self.busy:
            stage = stage_from_fields(event.fields)
            if stage is not None:
                self.progress_label.setText(f"{machine}: {stage.source}: {stage.name} ({stage.state})")
        elif event.type in ("state", "link", "socket"):
            self.refresh()
        elif event.type == "error":
            self.progress_label.setText(f"{machine}: {event.get('message')} {event.get('hint') or ''}")

    # -- verbs --------------------------------------------------------------------------------------------
    def act(self, verb: str) -> None:
        if verb == "create":
            self.open_create()
            return
        name = self.current()
        if not name or not self.buttons[verb].isEnabled():
            return
        if verb == "log":
            self.show_log(name)
            return
        if verb == "delete":
            m = self.machine(name)
            ask = f"Delete machine '{name}' with its disk and keys?"
            if m is not None and m.state == "running":
                ask += "\nIt is running: it will be forced off."
            if not self.confirm(ask):
                return
        self.run_verb(verb, name)

    def confirm(self, text: str) -> bool:
        """Overridable in tests; a real dialog otherwise."""
        answer = QMessageBox.question(self, "pymachine", text)
        return answer == QMessageBox.StandardButton.Yes

    def run_verb(self, verb: str, name: str, on_done: Callable[[Any], None] | None = None) -> None:
        funcs: dict[str, Callable[..., Any]] = {
            "start": lambda progress: machines.start(name, progress),
            "stop": lambda progress: machines.stop(name, progress),
            "restart": lambda progress: machines.restart(name, progress),
            "delete": lambda: machines.delete(name, force=True),
        }
        self.busy[name] = {"start": "starting", "stop": "stopping", "restart": "restarting"}.get(
            verb, "deleting"
        )
        self.banner.hide()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.progress_label.setText(f"{self.busy[name]} '{name}'…")
        self._update_buttons()
        self._set_state_cell(name, self.busy[name])

        def done(result: Any) -> None:
            self.busy.pop(name, None)
            self.progress.hide()
            self.progress_label.setText(f"'{name}': {verb} done")
            self.refresh()
            if on_done:
                on_done(result)

        def failed(exc: BaseException) -> None:
            self.busy.pop(name, None)
            self.progress.hide()
            self.progress_label.setText("")
            # the error names the console log; when the failure came before the VM wrote one, the agent's
            mp = paths.machine(name)
            self.banner.show_error(exc, mp.console_log, mp.agent_log)
            self.refresh()

        workers.run_task(funcs[verb], on_done=done, on_failed=failed, on_progress=self._progress)

    def _progress(self, message: Any) -> None:
        """A StageProgress of `start` moves the bar (the host agent's own stages only relabel it); anything
        else is a note shown as it is."""
        if isinstance(message, StageProgress) and message.source != "host agent":
            self.progress.setRange(0, message.total)
            self.progress.setValue(message.step if message.state == "done" else message.step - 1)
            self.progress_label.setText(f"{message.source} {message.step}/{message.total}: {message.name}")
        else:
            self.progress_label.setText(str(message))

    def _set_state_cell(self, name: str, text: str) -> None:
        for i, m in enumerate(self.rows):
            if m.name == name and self.table.item(i, 1):
                self.table.item(i, 1).setText(text)

    def show_log(self, name: str) -> None:
        mp = paths.machine(name)
        found = [p for p in (mp.console_log, mp.agent_log) if p.exists()] or [mp.console_log]
        self.log_dialog = LogDialog(found[0], self, *found[1:])
        self.log_dialog.show()

    def open_create(self) -> CreateDialog:
        self.dialog = CreateDialog(load_settings()["defaults"], self)
        self.dialog.created.connect(lambda m: (self.refresh(), self._select_later(m.name)))
        self.dialog.show()
        return self.dialog

    def _select_later(self, name: str) -> None:
        QTimer.singleShot(500, lambda: self.select(name))

    def run_verb_named(self, verb: str, name: str) -> None:
        """For the tray: a verb on a machine that may not be the selected one."""
        if name not in self.busy:
            self.run_verb(verb, name)
