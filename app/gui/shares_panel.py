"""Settings → Shared folders: a machine's host folders with Add/Remove (the calls `pymachine mount` makes):
live, read-only or a synced copy, each with the note `pymachine mount list` prints (pending, sync state)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import machines, share_hotplug
from pymachine.hostvm.errors import PymachineError


class SharesBox(QGroupBox):
    """Rendering only: the list is `machines.get(name).shares`, changes go to `machines.mount_add/rm`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Shared folders (seen at the same path in the machine)", parent)
        self.machine = QComboBox()
        self.machine.currentTextChanged.connect(lambda _t: self.reload_shares())
        self.list = QListWidget()
        self.list.setMaximumHeight(64)  # a few rows: the Settings tab must fit an 800x600 window
        self.path = QLineEdit(placeholderText="/home/me/project")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.readonly = QCheckBox("Read-only")
        self.sync = QCheckBox("Synced copy")
        self.sync.setToolTip(
            "a copy on the machine's disk kept in sync both ways: containers read and write it at disk speed"
        )
        # a sync share is read-write: the two boxes exclude each other
        self.readonly.toggled.connect(lambda on: on and self.sync.setChecked(False))
        self.sync.toggled.connect(lambda on: on and self.readonly.setChecked(False))
        self.add_button = QPushButton("&Add")
        self.add_button.clicked.connect(self.add)
        self.remove_button = QPushButton("&Remove")
        self.remove_button.clicked.connect(self.remove)
        self.status = QLabel(wordWrap=True)

        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        row.addWidget(self.readonly)
        row.addWidget(self.sync)
        row.addWidget(self.add_button)
        top = QHBoxLayout()
        top.addWidget(self.machine, 1)
        top.addWidget(self.remove_button)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.list)
        lay.addLayout(row)
        lay.addWidget(self.status)
        self.reload()

    def reload(self) -> None:
        current = self.machine.currentText()
        self.machine.blockSignals(True)
        self.machine.clear()
        names = machines.machine_names()  # the folder scan: no driver asked on the GUI thread
        self.machine.addItems(names)
        if current in names:
            self.machine.setCurrentText(current)
        self.machine.blockSignals(False)
        for w in (self.path, self.add_button, self.remove_button, self.readonly, self.sync):
            w.setEnabled(bool(names))
        if not names:
            self.status.setText("No machine yet: create one, then share folders with it here.")
        self.reload_shares()

    def follow(self, name: str) -> None:
        """Show the shares of the machine selected in the window (the list first catches up with the
        machines created or deleted since): the box opened on the first machine by name, whichever was
        selected."""
        if machines.machine_names() != [self.machine.itemText(i) for i in range(self.machine.count())]:
            self.reload()
        if name and name != self.machine.currentText() and self.machine.findText(name) >= 0:
            self.machine.setCurrentText(name)  # its signal reloads the list of shares

    def reload_shares(self) -> None:
        self.list.clear()
        name = self.machine.currentText()
        if not name:
            return
        try:
            m = machines.get(name)
        except PymachineError as exc:
            self.status.setText(exc.message)
            return
        for s in m.shares:
            ro = " (read-only)" if s["readonly"] else ""
            how = "synced copy" if s["transport"] == "sync" else s["transport"]
            note = share_hotplug.note(s)  # pending "(restart to apply)", or a copy's state: in sync, error: …
            if note:
                how += f" {note}" if s.get("pending") else f", {note}"
            item = QListWidgetItem(f"{s['path']}{ro}  — {how}")
            item.setData(Qt.ItemDataRole.UserRole, s["path"])  # Remove acts on the path, not on this text
            self.list.addItem(item)
        if not m.shares:
            self.list.addItem("(none: containers see only the machine's own folders)")

    def add(self) -> None:
        text = self.path.text().strip()
        if not text:
            self.status.setText("Type or browse to a folder first.")
            return
        mode = ":ro" if self.readonly.isChecked() else ":sync" if self.sync.isChecked() else ""
        self._change(machines.mount_add, text + mode, "shares")
        self.path.clear()

    def remove(self) -> None:
        item = self.list.currentItem()
        path = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if not path:
            self.status.setText("Pick a shared folder in the list first.")
            return
        self._change(machines.mount_rm, path, "no longer shares")

    def _change(self, call, path: str, done: str) -> None:  # type: ignore[no-untyped-def]
        name = self.machine.currentText()
        try:
            _, change = call(name, path)
        except PymachineError as exc:
            self.status.setText(exc.message)
            return
        when = share_hotplug.phrase(change, name, call is machines.mount_add)
        self.status.setText(f"'{name}' {done} {path} ({when})")
        self.reload_shares()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Share a folder")
        if folder:
            self.path.setText(folder)
