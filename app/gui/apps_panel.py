"""Apps deployed by `git push` to the selected machine (docs/deploy.md): name, serving release, URL, state;
open, roll back to a chosen release, follow the serving release's log, remove. The app records come from the
deploy façade (`hostvm.deploy`: the same typed `App` values `pymachine app list` prints); their containers'
states from the machine's engine; rollback and remove are the façade's own verbs, run on a worker."""

from __future__ import annotations

import datetime as dt
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QPushButton,
    QTabWidget,
    QWidget,
)

from pymachine.hostvm import containers
from pymachine.hostvm.deploy import apps, release
from pymachine.hostvm.deploy.model import LABEL, App
from pymachine.hostvm.progress import StageProgress

from .common import title_label
from .containers_panel import ClientFactory, default_client
from .engine_panel import EngineTab
from .logs_view import LogsView
from .table_model import Column, DataTable


def list_apps(dc: Any, machine: str) -> list[dict[str, Any]]:
    """The machine's apps, each with `_state`: its serving release container's state on the engine."""
    found = [a for a in apps.all_apps() if a.machine == machine]
    states: dict[str, str] = {}
    if found:
        with containers.api_errors():
            for c in dc.containers.list(all=True, filters={"label": LABEL}):
                states[c.name] = str(c.status)
    return [{"app": a, "_state": _state(a, states)} for a in found]


def _state(app: App, states: dict[str, str]) -> str:
    if not app.current:
        return "not deployed"
    return states.get(app.container(app.current), "missing")


def _dot(row: dict[str, Any]) -> str:
    return {"running": "ok", "not deployed": "off", "restarting": "busy"}.get(row["_state"], "bad")


def _release(row: dict[str, Any]) -> str:
    app: App = row["app"]
    return f"v{app.current}" if app.current else "—"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "—"


COLUMNS = (
    Column("Name", lambda r: r["app"].name, width=150, dot=_dot),
    Column("Release", _release, lambda r: r["app"].current, width=70),
    Column("URL", lambda r: r["app"].url, width=200, links=lambda r: [(r["app"].url, r["app"].url)]),
    Column("State", lambda r: r["_state"], width=100),
    Column("Releases", lambda r: str(len(r["app"].releases)), lambda r: len(r["app"].releases), width=70),
    Column(
        "Last release", lambda r: _when(max((x.created for x in r["app"].releases), default=0)), width=140
    ),
)

RELEASE_COLUMNS = (
    Column("Version", lambda r: r["label"], lambda r: -r["version"], width=70),
    Column("Serving", lambda r: "●" if r["serving"] else "", width=60),
    Column("Created", lambda r: _when(r["created"]), width=140),
    Column("Description", lambda r: r["description"], width=220),
    Column("Image", lambda r: r["image"].removeprefix("sha256:")[:12], width=110),
)


class AppsPanel(EngineTab, QWidget):
    NOUN = "Apps"
    link_opened = Signal(str)
    notice = Signal(str)

    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
        self.dc: Any = None
        self.title = title_label()
        self.buttons: dict[str, QPushButton] = {}
        bar = QHBoxLayout()
        bar.addWidget(self.title, 1)
        for verb, label in (
            ("open", "&Open"),
            ("rollback", "Roll &back…"),
            ("logs", "&Logs"),
            ("remove", "Remo&ve…"),
        ):
            button = QPushButton(label)
            button.setObjectName(f"app_{verb}")
            button.clicked.connect(lambda _c=False, v=verb: self.act(v))
            bar.addWidget(button)
            self.buttons[verb] = button
        self.table = DataTable(COLUMNS, lambda r: r["app"].name, "Search apps")
        self.table.current_changed.connect(lambda _k: self._selected())
        self.table.link_clicked.connect(self.open_link)
        self.table.menu_requested.connect(self.show_context_menu)
        self.releases = DataTable(RELEASE_COLUMNS, lambda r: r["label"], "Search releases")
        self.logs = LogsView()
        self.logs.clear("Select an app and press Logs to follow its serving release.")
        self.details = QTabWidget()
        self.details.addTab(self.releases, "&Releases")
        self.details.addTab(self.logs, "Lo&g")
        self.lay_out(bar, self.details)
        self.working = False
        self._note = ""  # a verb's own last word ("already serves v2"), said instead of the generic one
        self._logs_for: tuple[str, int] = ("", 0)
        self.start_timer()
        self.set_machine("", None)

    def reset_engine(self) -> None:
        super().reset_engine()
        self.logs.clear("Select an app and press Logs to follow its serving release.")
        self.releases.set_rows([])

    # -- data ---------------------------------------------------------------------------------------------
    def fetch(self, dc: Any, machine: str) -> list[dict[str, Any]]:
        return list_apps(dc, machine)

    def empty_text(self, machine: str) -> str:
        return (
            f"No apps on '{machine}' yet — make one, then push a project with a Dockerfile:\n"
            f"pymachine app create myapp --machine {machine}\n"
            "(it prints the git remote add and git push commands to paste)"
        )

    def filled(self) -> None:
        self._selected()

    def current(self) -> App | None:
        row = self.table.current()
        return row["app"] if row else None

    def select(self, name: str) -> bool:
        return self.table.select_key(name)

    def _selected(self) -> None:
        app = self.current()
        self.releases.set_rows(
            [
                {
                    "label": r.label,
                    "version": r.version,
                    "serving": r.version == app.current,
                    "created": r.created,
                    "description": r.description,
                    "image": r.image,
                }
                for r in app.releases
            ]
            if app
            else []
        )
        if app is None or (self.logs.thread is not None and self._logs_for != (app.name, app.current)):
            self.logs.clear("Select an app and press Logs to follow its serving release.")
        self._update_buttons()

    def _update_buttons(self) -> None:
        app = self.current()
        ok = self.usable and not self.working and app is not None
        deployed = bool(app and app.current)
        self.buttons["open"].setEnabled(deployed)
        self.buttons["rollback"].setEnabled(ok and deployed and len(app.releases) > 1)  # type: ignore[union-attr]
        self.buttons["logs"].setEnabled(ok and deployed)
        self.buttons["remove"].setEnabled(ok)

    def menu_actions(self) -> list[tuple[str, Any, bool]]:
        app = self.current()
        return [
            ("Open in a browser", lambda: self.act("open"), self.buttons["open"].isEnabled()),
            (
                "Copy URL",
                lambda: QGuiApplication.clipboard().setText(app.url if app else ""),
                app is not None,
            ),
            ("Roll back…", lambda: self.act("rollback"), self.buttons["rollback"].isEnabled()),
            ("Logs", lambda: self.act("logs"), self.buttons["logs"].isEnabled()),
            ("", lambda: None, True),
            ("Remove…", lambda: self.act("remove"), self.buttons["remove"].isEnabled()),
        ]

    # -- verbs --------------------------------------------------------------------------------------------
    def open_link(self, url: str) -> None:
        self.link_opened.emit(url)
        if not QDesktopServices.openUrl(QUrl(url)):
            QGuiApplication.clipboard().setText(url)
            self.notice.emit(f"Couldn't open a browser — {url} copied to the clipboard")

    def choose_release(self, app: App) -> int | None:
        """Which release to serve again (a dialog; overridable in tests). Default: the one before."""
        older = sorted((r for r in app.releases if r.version != app.current), key=lambda r: -r.version)
        if not older:
            return None
        items = [f"{r.label} — {r.description} ({_when(r.created)})" for r in older]
        before = [i for i, r in enumerate(older) if r.version < app.current]
        picked, ok = QInputDialog.getItem(
            self,
            "Roll back",
            f"Serve which release of {app.name} again?",
            items,
            before[0] if before else 0,
            False,
        )
        return older[items.index(picked)].version if ok else None

    def act(self, verb: str) -> None:
        app = self.current()
        if app is None or not self.buttons[verb].isEnabled():
            return
        if verb == "open":
            self.open_link(app.url)
        elif verb == "logs":
            self.details.setCurrentWidget(self.logs)
            self._logs_for = (app.name, app.current)
            self.logs.show_container(self.client(), app.container(app.current), f"{app.name} v{app.current}")
        elif verb == "rollback":
            version = self.choose_release(app)
            if version is not None:
                self._note = ""
                self.run_work(
                    f"Rolling {app.name} back to v{version}…",
                    lambda progress: release.rollback(app.name, version, progress),
                    lambda r: self._note or f"{app.name} serves {r.label} at {app.url}",
                    self._progress,
                )
        elif verb == "remove" and self.confirm(
            f"Remove app '{app.name}': its containers, images, network and git repository?"
        ):
            self.run_work(
                f"Removing {app.name}…",
                lambda progress: release.remove(app.name, progress),
                lambda _r: f"Removed {app.name}.",
                self._progress,
            )

    def _progress(self, message: Any) -> None:
        if isinstance(message, StageProgress):
            self.status.setText(f"{message.source} {message.step}/{message.total}: {message.name}")
        elif isinstance(message, str):
            self.status.setText(message)
            if "already serves" in message:
                self._note = message  # a rollback to what serves: said, not "serves vN" as if it changed

    def shutdown(self) -> None:
        self.timer.stop()
        self.logs.stop()
