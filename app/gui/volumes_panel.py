"""Volumes of the selected machine's engine: name, driver, which containers use each, mountpoint, created;
inspect, remove (the engine refuses a volume in use: its message is shown), prune the unused ones."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import containers
from pymachine.hostvm.units import human_size

from . import workers
from .common import ErrorBanner, describe, empty_state, title_label
from .containers_panel import ClientFactory, default_client
from .engine_panel import NO_MACHINE, EngineTab, as_view
from .images_panel import created
from .inspect_view import InspectView
from .machine_state import MachineView
from .table_model import Column, DataTable


def list_volumes(dc: Any) -> list[dict[str, Any]]:
    """Each volume's attributes plus `_users`: the names of the containers (running or not) that mount it."""
    with containers.api_errors():
        vols = (dc.api.volumes() or {}).get("Volumes") or []
        users: dict[str, list[str]] = {}
        for c in dc.api.containers(all=True):
            for m in c.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Name"):
                    users.setdefault(m["Name"], []).append((c.get("Names") or ["/?"])[0].lstrip("/"))
    return [v | {"_users": sorted(users.get(v["Name"], []))} for v in vols]


COLUMNS = (
    Column("Name", lambda v: v["Name"], width=220, dot=lambda v: "ok" if v["_users"] else "off"),
    Column("Driver", lambda v: v.get("Driver") or "local", width=70),
    Column("Used by", lambda v: ", ".join(v["_users"]) or "—", lambda v: len(v["_users"]), width=180),
    Column("Mountpoint", lambda v: v.get("Mountpoint") or "", width=260),
    Column(
        "Created", lambda v: created(v.get("CreatedAt")), lambda v: str(v.get("CreatedAt") or ""), width=150
    ),
)


class VolumesPanel(EngineTab, QWidget):
    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
        self.machine, self.usable = "", False
        self.dc: Any = None
        self.title = title_label()
        self.remove_button = QPushButton("Remo&ve")
        self.remove_button.clicked.connect(self.remove)
        self.prune_button = QPushButton("&Prune unused…")
        self.prune_button.clicked.connect(self.prune)
        bar = QHBoxLayout()
        bar.addWidget(self.title, 1)
        bar.addWidget(self.remove_button)
        bar.addWidget(self.prune_button)
        self.table = DataTable(COLUMNS, lambda v: v["Name"], "Search volumes (name, container…)")
        self.table.current_changed.connect(lambda _k: self._selected())
        self.inspect = InspectView()
        self.inspect.text.setPlaceholderText("Select a volume to see its inspect JSON.")
        self.empty = empty_state("")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.stack)
        split.addWidget(self.inspect)
        self.status = QLabel(wordWrap=True)
        self.banner = ErrorBanner()
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(split, 1)
        lay.addWidget(self.status)
        lay.addWidget(self.banner)
        self._refreshing = False
        self.working = False
        self.timer = QTimer(self, interval=10000)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.set_machine("", None)

    def set_machine(self, name: str, view: MachineView | bool | None) -> None:
        view = as_view(name, view)
        usable = bool(name) and view is not None and view.engine_usable
        changed = (name, usable) != (self.machine, self.usable)
        if changed:
            self.dc = None
            self.table.set_rows([])
            self.inspect.clear()
        self.machine, self.usable = name, usable
        self.title.setText(f"Volumes on '{name}'" if name else "Volumes")
        if not name or view is None:
            self._empty(NO_MACHINE)
        elif not usable:
            self._empty(view.sentence())
        elif changed:
            self.refresh()
        self._update_buttons()

    def refresh(self) -> None:
        if not self.usable or self._refreshing:
            return
        self._refreshing = True
        dc, machine = self.client(), self.machine
        workers.run_task(
            lambda: list_volumes(dc),
            on_done=lambda rows: self._fill(rows, machine),
            on_failed=lambda exc: self._failed(exc, machine),
        )

    def _failed(self, exc: BaseException, machine: str) -> None:
        self._refreshing = False
        if machine != self.machine or not self.usable:
            return
        self.dc = None
        message, hint = describe(exc)
        self._empty(f"Cannot reach the engine of '{machine}': {message}" + (f"\n{hint}" if hint else ""))

    def _fill(self, rows: list[dict[str, Any]], machine: str) -> None:
        self._refreshing = False
        if machine != self.machine or not self.usable:
            return
        self.table.set_rows(rows)
        if rows:
            self.stack.setCurrentWidget(self.table)
        else:
            self._empty(f"No volumes on '{machine}' yet — docker volume create NAME, or run -v NAME:/path.")
        self._selected()

    def current(self) -> dict[str, Any] | None:
        return self.table.current()

    def select(self, name: str) -> bool:
        return self.table.select_key(name)

    def _selected(self) -> None:
        v = self.current()
        if v is None:
            self.inspect.clear()
        else:
            self.inspect.show_json(
                f"Inspect of volume {v['Name']}", {k: x for k, x in v.items() if not k.startswith("_")}
            )
        self._update_buttons()

    def _update_buttons(self) -> None:
        ok = self.usable and not self.working
        self.remove_button.setEnabled(ok and self.current() is not None)
        self.prune_button.setEnabled(ok)

    def confirm(self, text: str) -> bool:
        return QMessageBox.question(self, "pymachine", text) == QMessageBox.StandardButton.Yes

    def _run(self, text: str, work: Any, done_text: Any) -> None:
        self.working = True
        self.banner.hide()
        self.status.setText(text)
        self._update_buttons()

        def finish(result: Any, exc: BaseException | None) -> None:
            self.working = False
            self.status.setText("" if exc else done_text(result))
            if exc is not None:
                self.banner.show_error(exc)
            self._update_buttons()
            self.refresh()

        workers.run_task(work, on_done=lambda r: finish(r, None), on_failed=lambda e: finish(None, e))

    def remove(self) -> None:
        v = self.current()
        if v is None or self.working:
            return
        name = v["Name"]
        users = f" It is used by {', '.join(v['_users'])}." if v["_users"] else ""
        if not self.confirm(f"Remove volume '{name}' and its data?{users}"):
            return
        dc = self.client()

        def work() -> None:
            with containers.api_errors(
                f"removing volume {name}", hint="remove the containers that use it first"
            ):
                dc.api.remove_volume(name)

        self._run(f"Removing {name}…", work, lambda _r: f"Removed volume {name}.")

    def prune(self) -> None:
        if self.working or not self.confirm("Remove every volume no container uses, with its data?"):
            return
        dc = self.client()

        def work() -> dict[str, Any]:
            with containers.api_errors("pruning volumes"):
                return (
                    dc.api.prune_volumes(filters={"all": "true"}) or {}
                )  # named ones too (Docker ≥ 23: anonymous only)

        def said(r: dict[str, Any]) -> str:
            gone = r.get("VolumesDeleted") or []
            return f"Pruned {len(gone)} volume(s), {human_size(int(r.get('SpaceReclaimed') or 0))} reclaimed."

        self._run("Pruning unused volumes…", work, said)
