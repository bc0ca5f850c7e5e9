"""Machines: state, CPUs/memory/disk, accelerator and engine link; create, start, stop, restart, delete.

Start shows the façade's staged progress (typed StageProgress values: step, total, name, state); a failure
shows its message, hint and a "Show log" button for the console log (or the host-agent log). State refreshes
from host-agent events and a slow poll.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
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
from .machine_state import BUSY_LABEL, MachineView, machine_view
from .settings_dialog import open_settings
from .settings_panel import load_settings
from .table_model import Column, DataTable
from .vm_usage import VmSample, footer_text, sample

POLL_MS = 5000


@dataclass(frozen=True)
class MachineRow:
    view: MachineView
    machine: machines.Machine


COLUMNS = (
    Column("Name", lambda r: r.view.name, width=150, dot=lambda r: r.view.dot),
    Column("State", lambda r: r.view.state, width=150),
    Column("CPUs", lambda r: str(r.machine.cpus), lambda r: r.machine.cpus, width=50),
    Column("Memory", lambda r: binary_size(r.machine.memory), lambda r: r.machine.memory, width=80),
    Column("Disk", lambda r: binary_size(r.machine.disk), lambda r: r.machine.disk, width=80),
    Column("Accelerator", lambda r: r.machine.accelerator or "—", width=90),
    Column("Driver", lambda r: r.machine.driver, width=70),
    Column("Engine", lambda r: r.view.engine or "—", width=160),
)


def _statuses_and_usage() -> tuple[list[MachineStatus], dict[str, VmSample]]:
    # repair=False: a refresh only looks; starting a dead host agent is the verbs' job
    rows = all_statuses(False)
    return rows, {st.machine.name: sample(st.machine) for st in rows}


class MachinesPanel(QWidget):
    selected = Signal(str)  # machine name ("" when none)
    changed = Signal(list)  # [MachineView] after each refresh and each change of a verb's progress
    finished = Signal(str, str, object)  # verb, machine, the exception it failed with (None: done)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[Any] = []  # the Machine values of the last refresh
        self.statuses: dict[str, MachineStatus] = {}
        self.busy: dict[str, str] = {}  # machine → verb this window runs on it
        self.stages: dict[str, StageProgress] = {}  # machine → current stage of its start
        self.table = DataTable(COLUMNS, lambda r: r.view.name, "Search machines")
        self.table.current_changed.connect(lambda _k: self._selection_changed())
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
                ("settings", "S&ettings…", "Ctrl+E"),  # settings_dialog.py
                ("log", "Show &log", "Ctrl+L"),
            ),
            self.act,
        )
        for b in self.buttons.values():  # at the 640 px minimum they shrink to their text, not below
            b.setMinimumWidth(b.fontMetrics().horizontalAdvance(b.text().replace("&", "")) + 16)
        bar.addStretch(1)
        refresh = QPushButton("Refresh")
        refresh.setShortcut(QKeySequence("F5"))
        refresh.clicked.connect(self.refresh)
        bar.addWidget(refresh)

        self.footer = QLabel()  # the selected machine's VM: CPU, resident memory, disk fill
        self.footer.setObjectName("machineFooter")
        self.footer.setWordWrap(True)
        self.footer.hide()
        self.usage: dict[str, VmSample] = {}
        self.usage_prev: dict[str, VmSample] = {}
        self.progress = QProgressBar()
        self.progress.hide()
        self.progress_label = QLabel()
        self.banner = ErrorBanner()
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.stack, 1)
        lay.addWidget(self.footer)
        lay.addWidget(self.progress_label)
        lay.addWidget(self.progress)
        lay.addWidget(self.banner)
        self.dialog: CreateDialog | None = None
        self.log_dialog: LogDialog | None = None
        self._refreshing = False
        self._select_after_refresh = ""
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
        workers.run_task(_statuses_and_usage, on_done=self._fill, on_failed=self._refresh_failed)

    def _refresh_failed(self, exc: BaseException) -> None:
        self._refreshing = False
        self.banner.show_error(exc)

    def _fill(self, answer: tuple[list[MachineStatus], dict[str, VmSample]]) -> None:
        rows, usage = answer
        self._refreshing = False
        self.usage_prev = {k: v for k, v in self.usage.items() if k in usage}
        self.usage = usage
        self.statuses = {st.machine.name: st for st in rows}
        self.rows = [st.machine for st in rows]
        self._publish()
        if self._select_after_refresh and self.select(self._select_after_refresh):
            self._select_after_refresh = ""
        if rows and not self.current():
            self.table.select_key(self.table.visible_keys()[0] if self.table.visible_keys() else "")

    def view(self, name: str) -> MachineView | None:
        st = self.statuses.get(name)
        return machine_view(st, self.busy.get(name, ""), self.stages.get(name)) if st else None

    def views(self) -> list[MachineView]:
        return [v for v in (self.view(m.name) for m in self.rows) if v is not None]

    def _publish(self) -> None:
        """Push the current views into the table and to everyone listening (one state everywhere)."""
        self.table.set_rows([MachineRow(self.view(m.name), m) for m in self.rows])  # type: ignore[arg-type]
        self.stack.setCurrentWidget(self.table if self.rows else self.empty)
        self._update_buttons()
        self._update_footer()
        self.changed.emit(self.views())

    def current(self) -> str:
        return self.table.current_key()

    def machine(self, name: str) -> Any:
        return next((m for m in self.rows if m.name == name), None)

    def select(self, name: str) -> bool:
        return self.table.select_key(name)

    def _update_footer(self) -> None:
        name = self.current()
        v = self.view(name) if name else None
        text = footer_text(name, v.state, self.usage_prev.get(name), self.usage.get(name)) if v else ""
        self.footer.setText(text)
        self.footer.setVisible(bool(text))

    def _selection_changed(self) -> None:
        self._update_footer()
        self._update_buttons()
        self.selected.emit(self.current())

    def _update_buttons(self) -> None:
        name = self.current()
        v = self.view(name) if name else None
        running = v is not None and v.state.startswith("running")
        idle = bool(name) and name not in self.busy
        self.buttons["start"].setEnabled(idle and not running)
        self.buttons["stop"].setEnabled(idle and running)
        self.buttons["restart"].setEnabled(idle and running)
        self.buttons["delete"].setEnabled(idle)
        self.buttons["settings"].setEnabled(idle)
        mp = paths.machine(name) if name else None
        self.buttons["log"].setEnabled(bool(mp and (mp.console_log.exists() or mp.agent_log.exists())))

    # -- host-agent events --------------------------------------------------------------------------------
    def on_event(self, machine: str, event: Any) -> None:
        if event.type == "stage" and machine in self.busy:
            stage = stage_from_fields(event.fields)
            if stage is not None:
                self._show_host_agent_step(machine, stage.name)
        elif event.type in ("state", "link", "socket"):
            self.refresh()
        elif event.type == "error" and self.expects_engine(machine):
            self.progress_label.setText(f"{machine}: {event.get('message')} {event.get('hint') or ''}")

    def _show_host_agent_step(self, machine: str, step: str) -> None:
        now = self.stages.get(machine)
        where = f"{now.source} {now.step}/{now.total}: {now.name} — " if now else f"{machine}: "
        self.progress_label.setText(f"{where}host agent: {step}")

    def expects_engine(self, machine: str) -> bool:
        """False while this window stops or deletes the machine, or once it is down: a lost link then is
        what was asked for, not an error to show."""
        v = self.view(machine)
        return v is not None and v.busy not in ("stop", "delete") and v.state.startswith("running")

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
        if verb == "settings":
            self.settings_dialog = open_settings(self, name)
            return
        if verb == "delete":
            v = self.view(name)
            ask = f"Delete machine '{name}' with its disk and keys?"
            if v is not None and v.state.startswith("running"):
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
        self.busy[name] = verb
        self.stages.pop(name, None)
        self.banner.hide()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.progress_label.setText(f"{BUSY_LABEL[verb]} '{name}'…")
        self._publish()

        def done(result: Any) -> None:
            self.busy.pop(name, None)
            self.stages.pop(name, None)
            self.progress.hide()
            self.progress_label.setText(f"'{name}': {verb} done")
            self.refresh()
            if on_done:
                on_done(result)
            self.finished.emit(verb, name, None)

        def failed(exc: BaseException) -> None:
            self.busy.pop(name, None)
            self.stages.pop(name, None)
            self.progress.hide()
            self.progress_label.setText("")
            # the error names the console log; when the failure came before the VM wrote one, the agent's
            mp = paths.machine(name)
            self.banner.show_error(exc, mp.console_log, mp.agent_log)
            self.refresh()
            self.finished.emit(verb, name, exc)

        workers.run_task(
            funcs[verb], on_done=done, on_failed=failed, on_progress=lambda v: self._progress(v, name)
        )

    def _progress(self, message: Any, machine: str = "") -> None:
        """A StageProgress of `start` moves the bar (the host agent's own stages only relabel it) and becomes
        the machine's stage everywhere; anything else is a note shown as it is."""
        if isinstance(message, StageProgress) and message.source == "start" and machine in self.busy:
            self.stages[machine] = message
            self._publish()
        if isinstance(message, StageProgress) and message.source != "host agent":
            # The label first: whoever watches the bar move reads the stage it moved to.
            self.progress_label.setText(f"{message.source} {message.step}/{message.total}: {message.name}")
            self.progress.setRange(0, message.total)
            self.progress.setValue(message.step if message.state == "done" else message.step - 1)
        elif isinstance(message, StageProgress):
            # The host agent starts while start's later stages still run (it overlaps them): its steps are
            # a detail of the current stage, not a second "stage 3 of 3" beside the bar's 4 of 5.
            self._show_host_agent_step(machine, message.name)
        else:
            self.progress_label.setText(str(message))

    def show_log(self, name: str) -> None:
        mp = paths.machine(name)
        found = [p for p in (mp.console_log, mp.agent_log) if p.exists()] or [mp.console_log]
        self.log_dialog = LogDialog(found[0], self, *found[1:])
        self.log_dialog.show()

    def open_create(self) -> CreateDialog:
        self.dialog = CreateDialog(load_settings()["defaults"], self)
        self.dialog.created.connect(self._created)
        self.dialog.show()
        return self.dialog

    def _created(self, m: Any) -> None:
        self._select_after_refresh = m.name
        self.refresh()

    def run_verb_named(self, verb: str, name: str) -> None:
        """For the tray: a verb on a machine that may not be the selected one."""
        if name not in self.busy:
            self.run_verb(verb, name)
