"""Volumes of the selected machine's engine: name, driver, which containers use each, mountpoint, created;
inspect, remove (the engine refuses a volume in use: its message is shown), prune the unused ones."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from pymachine.hostvm import containers
from pymachine.hostvm.units import human_size

from .common import title_label
from .containers_panel import ClientFactory, default_client
from .engine_panel import EngineTab, run_each
from .images_panel import created
from .inspect_view import InspectView
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
    NOUN = "Volumes"

    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
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
        self.table = DataTable(COLUMNS, lambda v: v["Name"], "Search volumes (name, container…)", multi=True)
        self.table.current_changed.connect(lambda _k: self._selected())
        self.table.view.selectionModel().selectionChanged.connect(lambda *_a: self._update_buttons())
        self.table.menu_requested.connect(self.show_context_menu)
        self.inspect = InspectView()
        self.inspect.text.setPlaceholderText("Select a volume to see its inspect JSON.")
        self.lay_out(bar, self.inspect)
        self.working = False
        self.start_timer()
        self.set_machine("", None)

    def reset_engine(self) -> None:
        super().reset_engine()
        self.inspect.clear()

    def fetch(self, dc: Any, machine: str) -> list[dict[str, Any]]:
        return list_volumes(dc)

    def empty_text(self, machine: str) -> str:
        return f"No volumes on '{machine}' yet — docker volume create NAME, or run -v NAME:/path."

    def filled(self) -> None:
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
        self.remove_button.setEnabled(ok and bool(self.table.selected_keys()))
        self.prune_button.setEnabled(ok)

    def menu_actions(self) -> list[tuple[str, Any, bool]]:
        ok = self.usable and not self.working
        names = self.table.selected_keys()
        one = len(names) == 1
        return [
            ("Inspect", lambda: self.inspect.text.setFocus(), one),
            ("Copy name", lambda: QGuiApplication.clipboard().setText("\n".join(names)), bool(names)),
            ("", lambda: None, True),
            (f"Remove {len(names)} volumes…" if not one else "Remove…", self.remove, ok and bool(names)),
            ("Prune unused…", self.prune, ok),
        ]

    def remove(self) -> None:
        """Remove the selected volumes after one confirmation; each one the engine refuses is listed."""
        vols = self.selected()
        if not vols or self.working:
            return
        names = [v["Name"] for v in vols]
        used = [f"{v['Name']} (used by {', '.join(v['_users'])})" for v in vols if v["_users"]]
        what = f"volume '{names[0]}'" if len(names) == 1 else f"{len(names)} volumes ({', '.join(names)})"
        users = f" In use: {'; '.join(used)}." if used else ""
        data = "its data" if len(names) == 1 else "the data in them"
        if not self.confirm(f"Remove {what} and {data}?{users}"):
            return
        dc = self.client()

        def remover(name: str) -> Any:
            def work() -> None:
                with containers.api_errors(
                    f"removing volume {name}", hint="remove the containers that use it first"
                ):
                    dc.api.remove_volume(name)

            return work

        if len(names) == 1:
            self.run_work(
                f"Removing {names[0]}…", remover(names[0]), lambda _r: f"Removed volume {names[0]}."
            )
            return
        self.run_work(
            f"Removing {len(names)} volumes…",
            lambda: run_each("remove", "volume", [(n, remover(n)) for n in names]),
            lambda r: r.summary(),
        )

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

        self.run_work("Pruning unused volumes…", work, said)
