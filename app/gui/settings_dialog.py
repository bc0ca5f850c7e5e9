"""A machine's Settings dialog: CPUs, memory, disk (grow only) and shared folders, applied at the next start.

Rendering only, over the one façade operation the CLI's `pymachine set` and `mount add|rm` use: the host's
limits, the config and whether the machine runs or has a saved state come from `machine_settings.context`
(on a worker: it asks the driver); every edit is checked at once by the façade's pure `plan()`, each
(field, problem) under its field; Apply runs `machines.configure` on a worker. For a running machine,
"Apply and restart" restarts it afterwards (the machines panel runs the restart, with its progress).
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import machine_settings as ms
from pymachine.hostvm import machines
from pymachine.hostvm.config import GiB, MiB, Share
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.units import binary_size

from . import workers
from .common import ErrorBanner

FIELDS = ("cpus", "memory", "disk", "shares")
MAX_DISK_GIB = 4096


def _gib(n: int) -> float:
    return round(n / GiB, 2)


class MachineSettingsDialog(QDialog):
    applied = Signal(object, bool)  # the SettingsResult, and whether the person asked for a restart

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.setWindowTitle(f"Settings — {name}")
        self.setMinimumWidth(560)
        self.ctx: ms.SettingsContext | None = None
        self.shares: list[Share] = []  # as edited here; written only by Apply
        self.result: ms.SettingsResult | None = None
        self.errors: dict[str, QLabel] = {}
        self.loading = QLabel(f"Reading the settings of '{name}'…")

        self.cpus = QSpinBox(objectName="field_cpus")
        self.memory = QDoubleSpinBox(objectName="field_memory", suffix=" GiB", decimals=2, singleStep=0.25)
        self.disk = QDoubleSpinBox(objectName="field_disk", suffix=" GiB", decimals=2, singleStep=1.0)
        self.limits = {k: QLabel(wordWrap=True, styleSheet="color: palette(mid);") for k in FIELDS}
        self.table = QTableWidget(0, 3, objectName="field_shares")
        self.table.setHorizontalHeaderLabels(
            ["Folder (the same path in the machine)", "Read-only", "Synced copy"]
        )
        self.table.horizontalHeaderItem(2).setToolTip(
            "a copy on the machine's disk kept in sync both ways: containers read and write it at disk speed"
        )
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(90)
        self.table.itemChanged.connect(self._mode_toggled)
        self.add_button = QPushButton("&Add folder…")
        self.add_button.clicked.connect(self.add_folder)
        self.remove_button = QPushButton("&Remove")
        self.remove_button.clicked.connect(self.remove_selected)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self._row(form, "&CPUs", self.cpus, "cpus")
        self._row(form, "&Memory", self.memory, "memory")
        self._row(form, "&Disk", self.disk, "disk")
        share_buttons = QHBoxLayout()
        share_buttons.addWidget(self.add_button)
        share_buttons.addWidget(self.remove_button)
        share_buttons.addStretch(1)
        shares_box = QVBoxLayout()
        shares_box.addWidget(self.table)
        shares_box.addLayout(share_buttons)
        self._row(form, "Shared folders", shares_box, "shares")
        for w in (self.cpus, self.memory, self.disk):
            w.valueChanged.connect(self.check)

        self.summary = QLabel(wordWrap=True, objectName="changes")
        self.notice = QLabel(wordWrap=True, objectName="notice")
        self.notice.setStyleSheet("padding: 6px; border: 1px solid palette(mid); border-radius: 4px;")
        self.banner = ErrorBanner()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.apply_button = self.buttons.addButton("Apply", QDialogButtonBox.ButtonRole.AcceptRole)
        self.restart_button = self.buttons.addButton(
            "Apply and restart", QDialogButtonBox.ButtonRole.ApplyRole
        )
        self.apply_button.clicked.connect(lambda: self.submit(restart=False))
        self.restart_button.clicked.connect(lambda: self.submit(restart=True))
        self.buttons.rejected.connect(self.reject)
        self.form = QWidget()
        self.form.setLayout(form)
        self.form.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addWidget(self.loading)
        lay.addWidget(self.form)
        lay.addWidget(self.summary)
        lay.addWidget(self.notice)
        lay.addWidget(self.banner)
        lay.addWidget(self.buttons)
        self.apply_button.setEnabled(False)
        self.restart_button.hide()
        workers.run_task(ms.context, name, on_done=self.fill, on_failed=self._load_failed)

    def _row(self, form: QFormLayout, label: str, field: Any, key: str) -> None:
        # the problem under its field, on as many lines as it needs
        err = QLabel(wordWrap=True, styleSheet="color: #d93025;", objectName=f"error_{key}")
        err.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.MinimumExpanding)
        err.hide()
        box = QVBoxLayout()
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        if isinstance(field, QVBoxLayout):
            box.addLayout(field)
        else:
            box.addWidget(field)
        box.addWidget(self.limits[key])
        box.addWidget(err)
        lab = QLabel(label)
        if isinstance(field, QWidget):
            lab.setBuddy(field)
        form.addRow(lab, box)
        self.errors[key] = err

    # -- loading ------------------------------------------------------------------------------------------
    def fill(self, ctx: ms.SettingsContext) -> None:
        self.ctx = ctx
        cfg, lim = ctx.config, ctx.limits
        for w in (self.cpus, self.memory, self.disk):
            w.blockSignals(True)
        self.cpus.setRange(1, max(lim.cpus, cfg.cpus))
        self.cpus.setValue(cfg.cpus)
        top = max(math.floor(lim.memory / GiB * 100) / 100, _gib(cfg.memory)) if lim.memory else 1024.0
        self.memory.setRange(0.25, top)
        self.memory.setValue(_gib(cfg.memory))
        self.disk.setRange(_gib(cfg.disk), max(MAX_DISK_GIB, _gib(cfg.disk)))  # grow only
        self.disk.setValue(_gib(cfg.disk))
        for w in (self.cpus, self.memory, self.disk):
            w.blockSignals(False)
        self.limits["cpus"].setText(f"{lim.cpus} cores on {lim.where}")
        self.limits["memory"].setText(
            f"{binary_size(lim.memory)} on {lim.where}" if lim.memory else "the host's memory is not known"
        )
        self.limits["disk"].setText(f"now {binary_size(cfg.disk)}; a disk can only grow")
        self.limits["shares"].setText("Containers can bind-mount folders inside these (docker run -v).")
        self.shares = list(cfg.shares)
        self._fill_table()
        self.loading.hide()
        self.form.setEnabled(True)
        self.restart_button.setVisible(ctx.running)
        self.check()

    def _load_failed(self, exc: BaseException) -> None:
        self.loading.hide()
        self.banner.show_error(exc)

    def _fill_table(self) -> None:
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.shares))
        for i, s in enumerate(self.shares):
            path = QTableWidgetItem(s.path)
            path.setToolTip(s.path)
            self.table.setItem(i, 0, path)
            for column, on in ((1, s.readonly), (2, s.sync)):
                box = QTableWidgetItem()
                box.setFlags(
                    Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                )
                box.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                self.table.setItem(i, column, box)
        self.table.blockSignals(False)

    # -- editing ------------------------------------------------------------------------------------------
    def pick_folder(self) -> str:
        """The folder picker (tests replace it)."""
        return QFileDialog.getExistingDirectory(self, "Share a folder with the machine")

    def add_folder(self) -> None:
        folder = self.pick_folder()
        if folder:
            self.shares.append(Share(folder))
            self._fill_table()
            self.check()

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for row in rows:
            del self.shares[row]
        self._fill_table()
        self.check()

    def set_readonly(self, row: int, readonly: bool) -> None:
        self.table.item(row, 1).setCheckState(Qt.CheckState.Checked if readonly else Qt.CheckState.Unchecked)

    def set_sync(self, row: int, sync: bool) -> None:
        self.table.item(row, 2).setCheckState(Qt.CheckState.Checked if sync else Qt.CheckState.Unchecked)

    def _mode_toggled(self, item: QTableWidgetItem) -> None:
        # a sync share is read-write, so checking one box clears the other; the share keeps what it had
        # otherwise (toggling read-only once turned a sync share into a live one)
        row = item.row()
        if item.column() not in (1, 2) or row >= len(self.shares):
            return
        on = item.checkState() == Qt.CheckState.Checked
        s = self.shares[row]
        readonly = on if item.column() == 1 else s.readonly and not on
        sync = on if item.column() == 2 else s.sync and not on
        self.shares[row] = Share(s.path, readonly, sync)
        other, other_on = (2, sync) if item.column() == 1 else (1, readonly)
        if self.table.item(row, other) is not None:
            self.table.blockSignals(True)
            self.table.item(row, other).setCheckState(
                Qt.CheckState.Checked if other_on else Qt.CheckState.Unchecked
            )
            self.table.blockSignals(False)
        self.check()

    def request(self) -> ms.SettingsRequest:
        """Only what differs from the machine's config (a spin box's rounding is no change)."""
        assert self.ctx is not None
        cfg = self.ctx.config
        cpus = self.cpus.value() if self.cpus.value() != cfg.cpus else None
        memory = round(self.memory.value() * 1024) * MiB if self.memory.value() != _gib(cfg.memory) else None
        disk = round(self.disk.value() * 1024) * MiB if self.disk.value() != _gib(cfg.disk) else None
        removed = tuple(s.path for s in cfg.shares if s not in self.shares)
        added = tuple(s for s in self.shares if s not in cfg.shares)
        return ms.SettingsRequest(
            cpus=cpus, memory=memory, disk=disk, add_shares=added, remove_shares=removed
        )

    def check(self) -> dict[str, str]:
        """Field → problem from the façade's own validation; updates the labels, summary and notice."""
        if self.ctx is None:
            return {}
        problems: dict[str, str] = {}
        planned = None
        try:
            planned = ms.plan(self.ctx.config, self.request(), self.ctx.limits)
        except UsageError as exc:
            problems = field_problems(exc)
        self.show_problems(problems)
        changes = planned.changes if planned else []
        said = "Fix the problems above." if problems else "No changes yet."
        self.summary.setText("Changes: " + ", ".join(str(c) for c in changes) if changes else said)
        self.notice.setText(notice_text(self.name, self.ctx))
        ok = planned is not None and bool(changes)
        self.apply_button.setEnabled(ok)
        self.restart_button.setEnabled(ok)
        return problems

    def show_problems(self, problems: dict[str, str]) -> None:
        for key, label in self.errors.items():
            label.setText(problems.get(key, ""))
            label.setVisible(key in problems)

    # -- applying -----------------------------------------------------------------------------------------
    def submit(self, restart: bool = False) -> None:
        if self.ctx is None or self.check() or not self.apply_button.isEnabled():
            return
        request = self.request()
        self.banner.hide()
        self.form.setEnabled(False)
        self.apply_button.setEnabled(False)
        self.restart_button.setEnabled(False)
        self.summary.setText("Applying…")
        workers.run_task(
            machines.configure,
            self.name,
            request,
            on_done=lambda result: self._done(result, restart),
            on_failed=self._failed,
        )

    def _done(self, result: ms.SettingsResult, restart: bool) -> None:
        self.result = result
        self.summary.setText(ms.describe(result))
        self.applied.emit(result, restart and result.running)
        self.accept()

    def _failed(self, exc: BaseException) -> None:
        self.form.setEnabled(True)
        if isinstance(exc, UsageError) and exc.problems:
            self.show_problems(field_problems(exc))
        self.banner.show_error(exc)
        self.summary.setText("")
        self.apply_button.setEnabled(True)
        self.restart_button.setEnabled(True)


def field_problems(exc: UsageError) -> dict[str, str]:
    """The façade's (field, problem) list → field: text (share problems come as `shares` or `mount`)."""
    out: dict[str, str] = {}
    for field, problem in exc.problems or [("shares", exc.message)]:
        key = "shares" if field in ("shares", "mount") or field not in FIELDS else field
        out[key] = problem if key not in out else f"{out[key]}\n{problem}"
    return out


def notice_text(name: str, ctx: ms.SettingsContext) -> str:
    """What happens when, said before the person confirms."""
    if ctx.running:
        text = (
            f"'{name}' is running: changes apply at its next start and stay pending until then. Its stop "
            "then shuts it down rather than saving its state. “Apply and restart” applies them now."
        )
    else:
        text = "Changes apply at the next start."
    if ctx.saved_state:
        text += " The saved state is discarded: the next start boots cold."
    return text  # "No changes yet." is the summary's line just above: not said twice


def open_settings(panel: Any, name: str) -> MachineSettingsDialog:
    """From the machines panel: the dialog, and a restart through the panel's own verb when asked for."""
    dialog = MachineSettingsDialog(name, panel)

    def applied(result: ms.SettingsResult, restart: bool) -> None:
        panel.progress_label.setText(ms.describe(result))
        if restart:
            panel.run_verb("restart", name)
        else:
            panel.refresh()

    dialog.applied.connect(applied)
    dialog.show()
    return dialog
