"""Settings: defaults for new machines, each machine's shared folders, start at login (an XDG autostart
entry), where data lives.

Stored in `paths.settings_file()` (settings.json in PYMACHINE_HOME) as
`{"defaults": {"cpus": "2", "memory": "1G", "disk": "8G"}, "start_at_login": false}`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from pymachine.app.gui.shares_panel import SharesBox
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import paths, store
from pymachine.hostvm.errors import UsageError

AUTOSTART_NAME = "pymachine.desktop"
AUTOSTART_ENTRY = """[Desktop Entry]
Type=Application
Name=pymachine
Comment=Start pymachine's desktop app at login
Exec={exec}
Icon=pymachine
Terminal=false
X-GNOME-Autostart-enabled=true
"""


def load_settings() -> dict[str, Any]:
    data = store.read_json(paths.settings_file(), {}) or {}
    defaults = data.get("defaults") or {}
    return {
        "defaults": {k: str(v) for k, v in defaults.items() if v},
        "start_at_login": bool(data.get("start_at_login")),
    }


def save_settings(data: dict[str, Any]) -> None:
    paths.ensure_home()
    store.write_json(paths.settings_file(), data)


def autostart_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "autostart" / AUTOSTART_NAME


def set_start_at_login(enabled: bool) -> Path:
    """Write or remove the XDG autostart entry (Linux desktops read ~/.config/autostart at login)."""
    path = autostart_file()
    if enabled:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(AUTOSTART_ENTRY.format(exec=f"{sys.executable} -m pymachine.app.gui.main"))
    else:
        path.unlink(missing_ok=True)
    return path


def validate_defaults(defaults: dict[str, str]) -> dict[str, str]:
    """Field → problem, from the real config validator (the same one `pymachine create` runs)."""
    from .create_dialog import field_problems

    try:
        cfgmod.build(
            name="check",
            cpus=defaults.get("cpus") or None,
            memory=defaults.get("memory") or None,
            disk=defaults.get("disk") or None,
            ncpus_host=cfgmod.host_cpus(),
            fallback_driver="qemu",
        )
    except UsageError as exc:
        return field_problems(exc)
    return {}


class SettingsPanel(QWidget):
    saved = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fields: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        hints = {
            "cpus": f"default: {min(2, cfgmod.host_cpus())} (this host has {cfgmod.host_cpus()})",
            "memory": "default: 1G",
            "disk": "default: 8G",
        }
        for key, label in (("cpus", "CPUs"), ("memory", "Memory"), ("disk", "Disk")):
            edit = QLineEdit(placeholderText=hints[key])
            edit.setMaximumWidth(320)
            err = QLabel(styleSheet="color: #b3261e;", wordWrap=True)
            err.hide()
            box = QVBoxLayout()
            box.setContentsMargins(0, 0, 0, 0)
            box.addWidget(edit)
            box.addWidget(err)
            form.addRow(f"{label}:", box)
            self.fields[key], self.errors[key] = edit, err
        defaults = QGroupBox("Defaults for new machines")
        defaults.setLayout(form)

        self.start_at_login = QCheckBox("Start pymachine when I log in")
        self.autostart_path = QLabel(f"writes {autostart_file()}", styleSheet="color: palette(mid);")
        login = QGroupBox("Start at login")
        ll = QVBoxLayout(login)
        ll.addWidget(self.start_at_login)
        ll.addWidget(self.autostart_path)
        if not sys.platform.startswith("linux"):
            self.start_at_login.setEnabled(False)
            self.autostart_path.setText("only on Linux desktops (XDG autostart) for now")

        data = QGroupBox("Where data lives")
        df = QFormLayout(data)
        for label, path in (
            ("State folder", paths.home()),
            ("Machines", paths.machines_dir()),
            ("Image cache", paths.cache_dir()),
            ("Settings", paths.settings_file()),
        ):
            row = QHBoxLayout()
            text = QLineEdit(str(path), readOnly=True)
            row.addWidget(text, 1)
            button = QPushButton("Open")
            button.setToolTip(f"open {path} in the file manager")
            button.clicked.connect(lambda _c=False, p=path: self._open(p))
            row.addWidget(button)
            df.addRow(f"{label}:", row)

        self.save_button = QPushButton("&Save settings")
        self.save_button.clicked.connect(self.save)
        self.status = QLabel()
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.save_button)

        self.shares = SharesBox()
        content = QWidget()
        lay = QVBoxLayout(content)
        lay.addWidget(defaults)
        lay.addWidget(self.shares)
        lay.addWidget(login)
        lay.addWidget(data)
        lay.addStretch(1)
        # Save sits below the scroll area, inset like the groups above it (not against the window's edge)
        margins = lay.contentsMargins()
        bottom.setContentsMargins(margins.left(), 0, margins.right(), margins.bottom())
        # the groups scroll (the window stays usable at 800x600); Save stays in view below them
        scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        outer.addLayout(bottom)
        self.reload()

    def reload(self) -> None:
        s = load_settings()
        for key, edit in self.fields.items():
            edit.setText(s["defaults"].get(key, ""))
        self.start_at_login.setChecked(s["start_at_login"] or autostart_file().exists())

    def save(self) -> bool:
        defaults = {k: e.text().strip() for k, e in self.fields.items() if e.text().strip()}
        problems = validate_defaults(defaults)
        for key, label in self.errors.items():
            label.setText(problems.get(key, ""))
            label.setVisible(key in problems)
        if problems:
            self.status.setText("Not saved: fix the fields in red.")
            return False
        save_settings({"defaults": defaults, "start_at_login": self.start_at_login.isChecked()})
        if sys.platform.startswith("linux"):
            set_start_at_login(self.start_at_login.isChecked())
        self.status.setText(f"Saved to {paths.settings_file()}")
        self.saved.emit()
        return True

    @staticmethod
    def _open(path: Path) -> None:
        target = path if path.is_dir() else path.parent
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))
