"""Containers of the selected machine: name, image, state, uptime, ports as `localhost:PORT` links; start,
stop, restart, remove; below, the live log, an exec shell and the inspect JSON of the selected container.

The engine is reached through `client_factory(machine)` — `containers.client(machine, ensure=False)` in the
app (the machine's forwarded socket), a test agent's socket in the cheap test tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import containers

from . import workers
from .common import ErrorBanner, action_buttons, empty_state, uptime
from .exec_terminal import ExecTerminal
from .inspect_view import InspectView
from .logs_view import LogsView

COLUMNS = ("Name", "Image", "State", "Uptime", "Ports", "ID")
POLL_MS = 3000
ClientFactory = Callable[[str], Any]


def default_client(machine: str) -> Any:
    return containers.client(machine, ensure=False)


def port_links(attrs: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, url) for every published TCP port: `localhost:8080 → 80/tcp`, http://localhost:8080/."""
    out = []
    for key, bindings in sorted((attrs.get("NetworkSettings", {}).get("Ports") or {}).items()):
        for b in bindings or []:
            port = b.get("HostPort")
            if (
                port
                and key.endswith("/tcp")
                and (b.get("HostIp") or "0.0.0.0") in ("0.0.0.0", "127.0.0.1", "::", "")
            ):
                url = f"http://localhost:{port}/"
                if (f"localhost:{port} → {key}", url) not in out:
                    out.append((f"localhost:{port} → {key}", url))
    return out


def list_containers(dc: Any, all_: bool) -> list[dict[str, Any]]:
    with containers.api_errors():
        found = dc.containers.list(all=all_)
        return [c.attrs | {"_summary": containers.summary(c)} for c in found]


class ContainersPanel(QWidget):
    link_opened = Signal(str)

    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
        self.machine = ""
        self.machine_running = False
        self.dc: Any = None
        self.rows: list[dict[str, Any]] = []
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: bold;")
        self.show_all = QCheckBox("Show &stopped", checked=True)
        self.show_all.toggled.connect(self.refresh)
        bar = QHBoxLayout()
        bar.addWidget(self.title)
        bar.addStretch(1)
        self.buttons = action_buttons(
            self,
            bar,
            "container",
            (
                ("start", "Start", "Ctrl+Shift+S"),
                ("stop", "Stop", "Ctrl+Shift+T"),
                ("restart", "Restart", "Ctrl+Shift+R"),
                ("remove", "Remove", "Ctrl+Shift+Delete"),
            ),
            self.act,
            tooltip="{text} the selected container ({key})",
        )
        bar.addWidget(self.show_all)
        QShortcut(
            QKeySequence("Ctrl+O"),
            self,
            self.open_first_port,
            context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
        )

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.empty = empty_state("")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)

        self.logs = LogsView()
        self.terminal = ExecTerminal()
        self.terminal.open_button.clicked.connect(self.open_shell)
        self.inspect = InspectView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.logs, "&Logs")
        self.tabs.addTab(self.terminal, "&Exec")
        self.tabs.addTab(self.inspect, "&Inspect")
        self.tabs.currentChanged.connect(lambda _i: self._show_details())

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.stack)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        self.banner = ErrorBanner()
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(split, 1)
        lay.addWidget(self.banner)
        self._refreshing = False
        self._detail_for = ""
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.set_machine("", False)

    # -- machine ------------------------------------------------------------------------------------------
    def set_machine(self, name: str, running: bool) -> None:
        if (name, running) == (self.machine, self.machine_running) and self.dc is not None:
            return
        changed = name != self.machine or running != self.machine_running
        self.machine, self.machine_running = name, running
        if changed:
            self._close_client()
        self.title.setText(f"Containers on '{name}'" if name else "Containers")
        if not name:
            self._empty("No machine selected — create one on the Machines tab (Ctrl+1, then Ctrl+N).")
        elif not running:
            self._empty(
                f"Machine '{name}' is not running — start it on the Machines tab (Ctrl+1, then Ctrl+S)."
            )
        else:
            self.refresh()
        self._update_buttons()

    def _close_client(self) -> None:
        self.logs.stop()
        self.terminal.stop()
        self.dc = None
        self.rows = []
        self.table.setRowCount(0)
        self._detail_for = ""

    def _empty(self, text: str) -> None:
        self.empty.setText(text)
        self.stack.setCurrentWidget(self.empty)

    def client(self) -> Any:
        if self.dc is None:
            self.dc = self.client_factory(self.machine)
        return self.dc

    # -- data ---------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.machine or not self.machine_running or self._refreshing:
            return
        self._refreshing = True
        all_ = self.show_all.isChecked()
        workers.run_task(
            lambda: list_containers(self.client(), all_), on_done=self._fill, on_failed=self._failed
        )

    def _failed(self, exc: BaseException) -> None:
        self._refreshing = False
        self.dc = None
        self._empty(f"Cannot reach the engine of '{self.machine}': {exc}")

    def _fill(self, rows: list[dict[str, Any]]) -> None:
        self._refreshing = False
        keep = self.current_id()
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, attrs in enumerate(rows):
            s = attrs["_summary"]
            state = attrs.get("State", {})
            cells = (
                s["Names"],
                s["Image"],
                s["Status"],
                uptime(state.get("StartedAt", "")) if state.get("Running") else "",
                "",
                s["ID"],
            )
            for col, text in enumerate(cells):
                self.table.setItem(i, col, QTableWidgetItem(text))
            links = port_links(attrs)
            label = QLabel(" ".join(f'<a href="{url}">{text}</a>' for text, url in links) or "—")
            label.setTextInteractionFlags(
                Qt.TextInteractionFlag.LinksAccessibleByMouse
                | Qt.TextInteractionFlag.LinksAccessibleByKeyboard
            )
            label.linkActivated.connect(self.open_link)
            label.setContentsMargins(4, 0, 4, 0)
            self.table.setCellWidget(i, 4, label)
        if rows:
            self.stack.setCurrentWidget(self.table)
        else:
            self._empty(
                f"No containers on '{self.machine}' yet — run one from a terminal:\n"
                f"pymachine run -d -p 8080:80 --name web IMAGE\n(or pull an image on the Images tab first)"
            )
        ids = [r["Id"] for r in rows]
        if keep in ids:
            self.table.selectRow(ids.index(keep))
        elif rows and not keep:
            self.table.selectRow(0)
        self._update_buttons()

    def open_first_port(self) -> None:
        """Keyboard route to the browser: the selected container's first published port (Ctrl+O)."""
        c = self.current()
        links = port_links(c) if c else []
        if links:
            self.open_link(links[0][1])

    def open_link(self, url: str) -> None:
        self.link_opened.emit(url)
        QDesktopServices.openUrl(QUrl(url))

    def current(self) -> dict[str, Any] | None:
        sel = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not sel or sel[0].row() >= len(self.rows):
            return None
        return self.rows[sel[0].row()]

    def current_id(self) -> str:
        c = self.current()
        return c["Id"] if c else ""

    def select(self, name: str) -> bool:
        for i, r in enumerate(self.rows):
            if r["_summary"]["Names"] == name:
                self.table.selectRow(i)
                return True
        return False

    def _selection_changed(self) -> None:
        self._update_buttons()
        self._show_details()

    def _show_details(self) -> None:
        c = self.current()
        if c is None or self.dc is None:
            return
        tab = self.tabs.currentWidget()
        key = f"{c['Id']}:{self.tabs.currentIndex()}"
        if tab is self.inspect:
            attrs = {k: v for k, v in c.items() if k != "_summary"}
            self.inspect.show_json(f"Inspect of {c['_summary']['Names']}", attrs)
        elif tab is self.logs and key != self._detail_for:
            self.logs.show_container(self.dc, c["Id"], c["_summary"]["Names"])
        elif tab is self.terminal:
            running = c.get("State", {}).get("Running", False)
            self.terminal.open_button.setEnabled(bool(running))
            if not running:
                self.terminal.title.setText(
                    f"{c['_summary']['Names']} is not running: start it to open a shell"
                )
        self._detail_for = key

    def open_shell(self) -> None:
        c = self.current()
        if c is None:
            return
        try:
            self.terminal.open(self.client(), c["Id"], c["_summary"]["Names"])
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            self.banner.show_error(exc)

    def _update_buttons(self) -> None:
        c = self.current()
        running = bool(c and c.get("State", {}).get("Running"))
        self.buttons["start"].setEnabled(bool(c) and not running)
        self.buttons["stop"].setEnabled(running)
        self.buttons["restart"].setEnabled(bool(c))
        self.buttons["remove"].setEnabled(bool(c))

    # -- verbs --------------------------------------------------------------------------------------------
    def confirm(self, text: str) -> bool:
        return QMessageBox.question(self, "pymachine", text) == QMessageBox.StandardButton.Yes

    def act(self, verb: str) -> None:
        c = self.current()
        if c is None or not self.buttons[verb].isEnabled():
            return
        name, cid = c["_summary"]["Names"], c["Id"]
        running = c.get("State", {}).get("Running")
        if verb == "remove" and not self.confirm(
            f"Remove container '{name}'?" + (" It is running: it will be killed." if running else "")
        ):
            return
        dc = self.client()

        def work() -> None:
            container = dc.containers.get(cid)
            with containers.api_errors(f"{verb} {name}"):
                if verb == "start":
                    containers.start(container)
                elif verb == "stop":
                    container.stop(timeout=10)
                elif verb == "restart":
                    container.restart(timeout=10)
                else:
                    container.remove(force=True)

        if verb == "remove":
            self.logs.stop()
            self.terminal.stop()
        for b in self.buttons.values():
            b.setEnabled(False)
        self.banner.hide()

        def done(_r: Any) -> None:
            self._detail_for = ""
            self.refresh()

        def failed(exc: BaseException) -> None:
            self.banner.show_error(exc)
            self.refresh()

        workers.run_task(work, on_done=done, on_failed=failed)

    def shutdown(self) -> None:
        self.timer.stop()
        self._close_client()
