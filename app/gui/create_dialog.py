"""The create-machine dialog: fields checked live by the real config validator, each problem under its field;
creation runs on a worker thread with the façade's progress messages."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machines
from pymachine.hostvm.errors import PymachineError, UsageError
from pymachine.hostvm.progress import StageProgress

from . import workers
from .common import ErrorBanner

FIELDS = ("name", "cpus", "memory", "disk", "driver")


def field_problems(exc: UsageError) -> dict[str, str]:
    """The validator's (field, problem) list → field: text, for the labels next to the fields (a field outside
    the form, e.g. `connect`, shows next to the name)."""
    out: dict[str, str] = {}
    for field, problem in exc.problems or [("name", exc.message)]:
        key = field if field in FIELDS else "name"
        out[key] = problem if key not in out else f"{out[key]}; {problem}"
    return out


def validate(values: dict[str, str]) -> dict[str, str]:
    """Field → problem for what the person typed ({} when `pymachine create` would accept it)."""
    try:
        cfgmod.build(
            name=values.get("name") or None,
            cpus=values.get("cpus") or None,
            memory=values.get("memory") or None,
            disk=values.get("disk") or None,
            driver=values.get("driver") or None,
            ncpus_host=cfgmod.host_cpus(),
            fallback_driver=cfgmod.default_driver(),
        )
    except UsageError as exc:
        return field_problems(exc)
    name = values.get("name") or cfgmod.DEFAULT_NAME
    if machines.exists(name):
        return {"name": f"a machine named '{name}' already exists"}
    return {}


class CreateDialog(QDialog):
    created = Signal(object)  # the Machine

    def __init__(self, defaults: dict[str, str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Create a machine")
        self.setMinimumWidth(520)
        defaults = defaults or {}
        self.edits: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        placeholders = {
            "name": "default",
            "cpus": str(min(2, cfgmod.host_cpus())),
            "memory": "1G",
            "disk": "8G",
        }
        labels = {"name": "&Name", "cpus": "&CPUs", "memory": "&Memory", "disk": "&Disk"}
        for key in ("name", "cpus", "memory", "disk"):
            edit = QLineEdit(defaults.get(key, ""), placeholderText=placeholders[key])
            edit.setObjectName(f"field_{key}")
            edit.textChanged.connect(self.check)
            self.edits[key] = edit
            self._add_row(form, labels[key], edit, key)
        self.driver = QComboBox()
        self.driver.setObjectName("field_driver")
        self.driver.addItems(list(cfgmod.KNOWN_DRIVERS))
        self.driver.setCurrentText(defaults.get("driver") or cfgmod.default_driver())
        self.driver.currentTextChanged.connect(self.check)
        self._add_row(form, "D&river", self.driver, "driver")
        hint = QLabel(
            f"Sizes take a unit (512M, 2G). This host has {cfgmod.host_cpus()} cores. "
            "The first machine builds the guest image, which takes a few minutes.",
            wordWrap=True,
            styleSheet="color: palette(mid);",
        )
        self.progress = QProgressBar(textVisible=False)
        self.progress.setRange(0, 0)
        self.progress.hide()
        self.status = QLabel(wordWrap=True)
        self.banner = ErrorBanner()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.create_button = self.buttons.addButton("Create", QDialogButtonBox.ButtonRole.AcceptRole)
        self.create_button.setDefault(True)
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(hint)
        lay.addWidget(self.banner)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.buttons)
        self.machine: Any = None
        self.edits["name"].setFocus()
        self.check()

    def _add_row(self, form: QFormLayout, label: str, field: QWidget, key: str) -> None:
        # as many lines as the message needs: a width-bound label that grows in height
        err = QLabel(wordWrap=True, styleSheet="color: #d93025;")
        err.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.MinimumExpanding)
        err.setObjectName(f"error_{key}")
        err.hide()
        box = QVBoxLayout()
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        box.addWidget(field)
        box.addWidget(err)
        lab = QLabel(label)
        lab.setBuddy(field)
        form.addRow(lab, box)
        self.errors[key] = err

    def values(self) -> dict[str, str]:
        out = {k: e.text().strip() for k, e in self.edits.items()}
        out["driver"] = self.driver.currentText()
        return out

    def check(self) -> dict[str, str]:
        problems = validate(self.values())
        for key, label in self.errors.items():
            label.setText(problems.get(key, ""))
            label.setVisible(key in problems)
        self.create_button.setEnabled(not problems and not self.progress.isVisible())
        return problems

    def submit(self) -> None:
        if self.check():
            return
        v = self.values()
        self.banner.hide()
        self.progress.show()
        self.create_button.setEnabled(False)
        for e in self.edits.values():
            e.setEnabled(False)
        self.status.setText("Creating…")

        def work(progress):  # type: ignore[no-untyped-def]
            return machines.create(
                v["name"] or None,
                cpus=v["cpus"] or None,
                memory=v["memory"] or None,
                disk=v["disk"] or None,
                driver=v["driver"] or None,
                progress=progress,
            )

        workers.run_task(work, on_done=self._done, on_failed=self._failed, on_progress=self._progress)

    def _done(self, machine: Any) -> None:
        self.machine = machine
        self.progress.hide()
        self.status.setText(f"Created '{machine.name}'.")
        self.created.emit(machine)
        self.accept()

    def _progress(self, message: Any) -> None:
        """create's StageProgress (guest image, machine files) fills the bar; notes show as they are."""
        if isinstance(message, StageProgress):
            self.progress.setRange(0, message.total)
            self.progress.setValue(message.step if message.state == "done" else message.step - 1)
            self.status.setText(f"step {message.step} of {message.total}: {message.name}")
        else:
            self.status.setText(str(message))

    def _failed(self, exc: BaseException) -> None:
        self.progress.hide()
        self.status.setText("")
        for e in self.edits.values():
            e.setEnabled(True)
        if isinstance(exc, UsageError) and exc.problems:
            self.check()
        self.banner.show_error(exc if isinstance(exc, BaseException) else PymachineError(str(exc)))
        self.create_button.setEnabled(True)
        self.edits["name"].setFocus(Qt.FocusReason.OtherFocusReason)
