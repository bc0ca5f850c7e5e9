"""The main window: Machines, Containers, Images and Settings tabs over one selected machine; host-agent
events drive live refreshes; the tray icon when the desktop has a tray."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QByteArray, QSize
from PySide6.QtGui import QCloseEvent, QGuiApplication, QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QSystemTrayIcon, QTabWidget, QWidget

from .apps_panel import AppsPanel
from .containers_panel import ClientFactory, ContainersPanel, default_client
from .images_panel import ImagesPanel
from .machine_state import MachineView
from .machines_panel import MachinesPanel
from .notify import Notifier
from .settings_panel import SettingsPanel
from .tray import Tray
from .volumes_panel import VolumesPanel
from .workers import EventWatcher

ICON_SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">
<rect x="4" y="8" width="56" height="44" rx="8" fill="#2463eb"/>
<rect x="12" y="18" width="18" height="12" rx="2" fill="#fff"/>
<rect x="34" y="18" width="18" height="12" rx="2" fill="#bcd3ff"/>
<rect x="12" y="34" width="40" height="8" rx="2" fill="#bcd3ff"/>
<rect x="22" y="54" width="20" height="4" rx="2" fill="#2463eb"/>
</svg>"""


def fitted_size(width: int, height: int) -> QSize:
    """The size asked for, or less where the screen is smaller: 90% of its free area leaves room for the title
    bar and the panel, so that no part of the window (the status bar, Save settings) opens off the screen."""
    screen = QGuiApplication.primaryScreen()
    if screen is None:
        return QSize(width, height)
    free = screen.availableGeometry()
    return QSize(min(width, free.width() * 9 // 10), min(height, free.height() * 9 // 10))


def app_icon() -> QIcon:
    pix = QPixmap()
    pix.loadFromData(QByteArray(ICON_SVG), "SVG")
    return QIcon(pix)


class MainWindow(QMainWindow):
    TABS = ("machines", "containers", "images", "volumes", "settings", "apps")

    def __init__(
        self,
        client_factory: ClientFactory = default_client,
        watch_events: bool = True,
        tray: bool = True,
        engine_override: bool = False,
    ) -> None:
        super().__init__()
        # with an explicit engine (--engine) the containers/images views show it whatever the machine's state
        self.engine_override = engine_override
        self.setWindowTitle("pymachine")
        self.setWindowIcon(app_icon())
        self.setMinimumSize(640, 480)
        self.resize(fitted_size(1280, 800))
        self.machines = MachinesPanel()
        self.containers = ContainersPanel(client_factory)
        self.images = ImagesPanel(client_factory)
        self.volumes = VolumesPanel(client_factory)
        self.settings = SettingsPanel()
        self.apps = AppsPanel(client_factory)
        self.tabs = QTabWidget(documentMode=True)
        for widget, label in (
            (self.machines, "&Machines"),
            (self.containers, "&Containers"),
            (self.images, "I&mages"),
            (self.volumes, "&Volumes"),
            (self.settings, "Se&ttings"),
            (self.apps, "A&pps"),
        ):
            self.tabs.addTab(widget, label)
        for i in range(len(self.TABS)):
            QShortcut(QKeySequence(f"Ctrl+{i + 1}"), self, lambda i=i: self.tabs.setCurrentIndex(i))
        QShortcut(QKeySequence(QKeySequence.StandardKey.Quit), self, self.quit)
        self.setCentralWidget(self.tabs)
        self.machine_label = QLabel()
        self.statusBar().addPermanentWidget(self.machine_label)
        self.statusBar().showMessage("Ctrl+1…6 switch tabs · Ctrl+N create a machine · F5 refresh")
        for panel in (self.containers, self.apps):
            panel.notice.connect(lambda text: self.statusBar().showMessage(text, 15000))
        for tab in (self.containers, self.images, self.volumes, self.apps):  # their "Start dev" link
            tab.start_machine = self._start_from_tab

        self.machines.selected.connect(self._machine_selected)
        self.machines.changed.connect(self._machines_changed)

        self.watcher: EventWatcher | None = None
        if watch_events:
            self.watcher = EventWatcher()
            self.watcher.event.connect(self._event)
            self.watcher.start()
        self.tray: Tray | None = None
        if tray and QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = Tray(app_icon(), self.machines.run_verb_named, self.show_window, self.quit, self)
            self.tray.show()
        self.notifier = Notifier(
            self, self.tray
        )  # start/stop done or failed, when the window is not in front
        self.machines.finished.connect(self.notifier.machine_verb_done)
        self._quitting = False

    # -- wiring -------------------------------------------------------------------------------------------
    def _machine_selected(self, name: str) -> None:
        view = self.machines.view(name) if name else None
        if self.engine_override:  # --engine: the views show that engine whatever the machine's state
            name = name or "engine"
            view = MachineView(name, "running", "")
        self.containers.set_machine(name, view)
        self.images.set_machine(name, view)
        self.volumes.set_machine(name, view)
        self.apps.set_machine(name, view)
        self.settings.shares.follow(name)
        self.machine_label.setText(f"machine: {name} ({view.state})" if view else "no machine selected")

    def _start_from_tab(self, name: str) -> None:
        """The engine tabs' Start link: the Machines tab's own verb (its progress and errors), seen there."""
        self.machines.run_verb_named("start", name)
        self.show_tab("machines")

    def _machines_changed(self, views: list[Any]) -> None:
        self._machine_selected(self.machines.current())
        if self.tray is not None:
            self.tray.update_machines(views)

    def _event(self, machine: str, event: Any) -> None:
        self.machines.on_event(machine, event)
        if event.type == "forward" and machine == self.machines.current():
            self.containers.refresh()
        if event.type == "error" and self.machines.expects_engine(machine):
            self.statusBar().showMessage(f"{machine}: {event.get('message')}", 15000)
        elif event.type == "forward":
            target = f"{self._container_label(event.get('container'))}:{event.get('guest_port')}"
            where = f"localhost:{event.get('host_port')} → {target}"
            why = f": {event.get('error')}" if event.get("error") else ""
            self.statusBar().showMessage(f"{machine}: port {where} {event.get('action')}{why}", 15000)

    def _container_label(self, container: Any) -> str:
        """A forward event names the container by its ID: show its name (or a 12-digit ID) instead."""
        if not container:
            return "guest"
        cid = str(container)
        for r in self.containers.rows:
            if r["Id"].startswith(cid) or cid.startswith(r["Id"][:12]):
                return str(r["_summary"]["Names"])
        return cid[:12] if len(cid) == 64 else cid

    def show_tab(self, name: str) -> QWidget:
        self.tabs.setCurrentIndex(self.TABS.index(name))
        return self.tabs.currentWidget()

    def show_window(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.machines.timer.stop()
        self.images.timer.stop()
        self.volumes.timer.stop()
        self.apps.shutdown()
        self.containers.shutdown()
        if self.tray is not None:
            self.tray.hide()

    def quit(self) -> None:
        self._quitting = True
        self.shutdown()
        QApplication.instance().quit()

    def closeEvent(self, event: QCloseEvent) -> None:
        # With a tray the window hides (machines keep running, as Docker Desktop does); without one it quits.
        if self.tray is not None and not self._quitting:
            self.hide()
            self.tray.showMessage("pymachine", "Still running in the tray.", app_icon(), 3000)
            event.ignore()
            return
        self.shutdown()
        event.accept()
