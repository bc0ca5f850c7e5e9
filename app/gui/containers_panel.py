"""Containers of the selected machine: a sortable, searchable table (name with a status dot, image, state,
uptime, ports as `localhost:8080 → web:80` links, ID); start, stop, restart, remove; below, the live log, an
exec shell and the inspect JSON of the selected container — or nothing, never another machine's container.

The engine is reached through `client_factory(machine)` — `containers.client(machine, ensure=False)` in the
app (the machine's forwarded socket), a test agent's socket in the cheap test tier. The client is made on the
GUI thread and handed to workers; workers only return values, the panel assigns its own state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm import containers
from pymachine.hostvm.units import human_size

from . import workers
from .common import ErrorBanner, action_buttons, empty_state, title_label, uptime
from .engine_panel import BulkResult, EngineTab
from .exec_terminal import ExecTerminal
from .inspect_view import InspectView
from .logs_view import LogsView
from .stats import StatsSample, cpu_percent
from .stats_view import StatsView
from .table_model import Column, DataTable

POLL_MS = 3000
ClientFactory = Callable[[str], Any]
PENDING = {"start": "Starting…", "stop": "Stopping…", "restart": "Restarting…", "remove": "Removing…"}


def default_client(machine: str) -> Any:
    return containers.client(machine, ensure=False)


def container_name(attrs: dict[str, Any]) -> str:
    return str(attrs.get("Name") or "").lstrip("/") or str(attrs.get("Id") or "")[:12] or "container"


def port_links(attrs: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, url) for every published TCP port: `localhost:8080 → web:80`, http://localhost:8080/."""
    out: list[tuple[str, str]] = []
    name = container_name(attrs)
    for key, bindings in sorted((attrs.get("NetworkSettings", {}).get("Ports") or {}).items()):
        for b in bindings or []:
            port = b.get("HostPort")
            if (
                port
                and key.endswith("/tcp")
                and (b.get("HostIp") or "0.0.0.0") in ("0.0.0.0", "127.0.0.1", "::", "")
            ):
                link = (f"localhost:{port} → {name}:{key.split('/')[0]}", f"http://localhost:{port}/")
                if link not in out:
                    out.append(link)
    return out


def short_image(ref: str) -> str:
    """An image reference as a person reads it: no `docker.io/library/`, digests cut to 12 hex digits."""
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    name, at, digest = ref.partition("@")
    if at:
        return f"{name}@{digest[:19]}"
    if ref.startswith("sha256:"):
        return ref[7:19]
    return ref


def list_containers(dc: Any, all_: bool) -> list[dict[str, Any]]:
    """Every container with its summary and, for running ones, one stats sample (`_stats`) for the CPU and
    memory columns (the CPU % comes from this sample and the previous refresh's)."""
    with containers.api_errors():
        found = dc.containers.list(all=all_)
        rows = [c.attrs | {"_summary": containers.summary(c)} for c in found]
    for row in rows:
        if row.get("State", {}).get("Running"):
            try:
                row["_stats"] = StatsSample.from_docker(dc.api.stats(row["Id"], stream=False, one_shot=True))
            except Exception:  # noqa: BLE001 - gone or stopped meanwhile: the columns stay empty
                pass
    return rows


def _cpu_text(a: dict[str, Any]) -> str:
    return "" if a.get("_cpu") is None else f"{a['_cpu']:.1f} %"


def _mem_text(a: dict[str, Any]) -> str:
    st = a.get("_stats")
    return human_size(st.mem_usage) if st is not None and st.measured else ""


def _state_dot(attrs: dict[str, Any]) -> str:
    st = attrs.get("State", {})
    if attrs.get("_pending"):
        return "busy"
    if st.get("Running"):
        return "busy" if st.get("Restarting") or st.get("Paused") else "ok"
    return "bad" if st.get("ExitCode") not in (0, None) or st.get("OOMKilled") else "off"


COLUMNS = (
    Column("Name", lambda a: a["_summary"]["Names"], width=150, dot=_state_dot),
    Column(
        "Image",
        lambda a: short_image(a["_summary"]["Image"]),
        width=150,
        tooltip=lambda a: a["_summary"]["Image"],
    ),
    Column("State", lambda a: a.get("_pending") or a["_summary"]["Status"], width=90),
    Column("CPU %", _cpu_text, lambda a: -1.0 if a.get("_cpu") is None else a["_cpu"], width=60),
    Column(
        "Memory",
        _mem_text,
        lambda a: a["_stats"].mem_usage if a.get("_stats") is not None and a["_stats"].measured else -1,
        width=80,
        tooltip=lambda a: f"{_mem_text(a)} of {human_size(a['_stats'].mem_limit)}" if _mem_text(a) else "",
    ),
    Column(
        "Uptime",
        lambda a: uptime(a["State"].get("StartedAt", "")) if a.get("State", {}).get("Running") else "",
        lambda a: a.get("State", {}).get("StartedAt", "") if a.get("State", {}).get("Running") else "~",
        width=120,
    ),
    Column(
        "Ports", lambda a: ", ".join(label for label, _u in port_links(a)) or "—", width=220, links=port_links
    ),
    Column("ID", lambda a: a["Id"][:12], width=110),
)


class ContainersPanel(EngineTab, QWidget):
    NOUN = "Containers"
    link_opened = Signal(str)
    notice = Signal(str)  # a short note for the status bar ("couldn't open a browser — URL copied")

    def __init__(self, client_factory: ClientFactory = default_client, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client_factory = client_factory
        self.dc: Any = None
        self._gen = 0  # bumped when the machine changes: answers for an older one are dropped
        self._list_seq = 0  # the list asked last: an older answer (from before a verb) is dropped
        self.pending: dict[str, str] = {}  # container id → verb this panel runs on it
        self.samples: dict[str, StatsSample] = {}  # container id → its last stats sample (for CPU %)
        self.title = title_label()
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

        self.table = DataTable(
            COLUMNS, lambda a: a["Id"], "Search containers (name, image, port…)", multi=True
        )
        self.table.current_changed.connect(lambda _k: self._selection_changed())
        self.table.view.selectionModel().selectionChanged.connect(lambda *_a: self._update_buttons())
        self.table.menu_requested.connect(self.show_context_menu)
        self.table.link_clicked.connect(self.open_link)
        self.empty = empty_state("")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)

        self.logs = LogsView()
        self.terminal = ExecTerminal()
        self.terminal.open_button.clicked.connect(self.open_shell)
        self.inspect = InspectView()
        self.stats = StatsView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.logs, "&Logs")
        self.tabs.addTab(self.terminal, "&Exec")
        self.tabs.addTab(self.inspect, "&Inspect")
        self.tabs.addTab(self.stats, "St&ats")
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
        self._detail_for = ""  # "<id>:<tab>" the detail pane shows
        self.start_timer(POLL_MS)
        self.set_machine("", None)

    # -- machine ------------------------------------------------------------------------------------------
    def reset_engine(self) -> None:
        self._close_client()  # streams (log, exec, stats) of the last machine end; its answers are dropped

    def _close_client(self) -> None:
        self._gen += 1
        self.dc = None
        self.pending.clear()
        self.samples.clear()
        self.table.set_rows([])
        self._clear_details()
        self._refreshing = False

    # -- data ---------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.machine or self.view is None or not self.view.engine_usable or self._refreshing:
            return
        self._refreshing = True
        self._list_seq += 1
        all_, asked = self.show_all.isChecked(), (self._gen, self._list_seq)
        try:
            dc = self.client()
        except Exception as exc:  # noqa: BLE001 - no socket yet: shown like a failed list
            self._failed(exc, asked)
            return
        workers.run_task(
            lambda: list_containers(dc, all_),
            on_done=lambda rows: self._fill(rows, asked),
            on_failed=lambda exc: self._failed(exc, asked),
        )

    def _failed(self, exc: BaseException, asked: tuple[int, int]) -> None:
        if asked != (self._gen, self._list_seq):
            return  # an answer about a machine (or a client) this panel no longer shows
        self._refreshing = False
        self.dc = None
        if self.view is None or not self.view.engine_usable:
            return  # the machine is stopping or stopped: a lost engine is expected, the sentence says why
        self.table.set_rows([])
        self._clear_details()
        self._unreachable(self.machine, exc)

    def _fill(self, rows: list[dict[str, Any]], asked: tuple[int, int]) -> None:
        if asked != (self._gen, self._list_seq):
            return
        self._refreshing = False
        if self.view is None or not self.view.engine_usable:
            return
        ids = {r["Id"] for r in rows}
        self.pending = {k: v for k, v in self.pending.items() if k in ids}
        for r in rows:
            cur = r.get("_stats")
            if cur is not None:
                r["_cpu"] = cpu_percent(self.samples.get(r["Id"]), cur)
                self.samples[r["Id"]] = cur
        self.samples = {k: v for k, v in self.samples.items() if k in ids}
        self.table.set_rows(
            [r | {"_pending": PENDING[self.pending[r["Id"]]]} if r["Id"] in self.pending else r for r in rows]
        )
        if rows:
            self.stack.setCurrentWidget(self.table)
        else:
            self._empty(
                f"No containers on '{self.machine}' yet — run one from a terminal:\n"
                f"pymachine run -d -p 8080:80 --name web IMAGE\n(or pull an image on the Images tab first)"
            )
        if rows and not self.table.current_key() and not self._detail_for:
            keys = self.table.visible_keys()
            if keys:
                self.table.select_key(keys[0])
        self._update_buttons()
        if self.tabs.currentWidget() is self.inspect:
            self._show_details()  # the inspect JSON follows the container's changes

    def open_first_port(self) -> None:
        """Keyboard route to the browser: the selected container's first published port (Ctrl+O)."""
        c = self.current()
        links = port_links(c) if c else []
        if links:
            self.open_link(links[0][1])

    def open_link(self, url: str) -> None:
        self.link_opened.emit(url)
        if not QDesktopServices.openUrl(QUrl(url)):
            QGuiApplication.clipboard().setText(url)
            self.notice.emit(f"Couldn't open a browser — {url} copied to the clipboard")

    def current(self) -> dict[str, Any] | None:
        return self.table.current()

    def current_id(self) -> str:
        return self.table.current_key()

    def select(self, name: str) -> bool:
        for r in self.rows:
            if r["_summary"]["Names"] == name:
                return self.table.select_key(r["Id"])
        return False

    def _selection_changed(self) -> None:
        self._update_buttons()
        self._show_details()

    def _clear_details(self) -> None:
        self.logs.clear()
        self.terminal.clear("Select a running container and click Open shell.")
        self.inspect.clear()
        self.stats.clear()
        self._detail_for = ""

    def _show_details(self) -> None:
        c = self.current()
        if c is None or self.dc is None:
            if self._detail_for:
                self._clear_details()
            return
        tab = self.tabs.currentWidget()
        key = f"{c['Id']}:{self.tabs.currentIndex()}"
        if not self._detail_for.startswith(c["Id"]):
            self._clear_details()  # another container: nothing of the last one stays on screen
        name = c["_summary"]["Names"]
        if tab is self.inspect:
            attrs = {k: v for k, v in c.items() if not k.startswith("_")}
            self.inspect.show_json(f"Inspect of {name}", attrs)
        elif tab is self.logs and key != self._detail_for:
            self.logs.show_container(self.dc, c["Id"], name)
        elif tab is self.stats:
            if c.get("State", {}).get("Running"):
                self.stats.show_container(self.dc, c["Id"], name)
            elif self.stats.container_id != c["Id"]:
                self.stats.clear(f"{name} is not running: start it to see its resource use.")
        elif tab is self.terminal and self.terminal.thread is None:
            running = c.get("State", {}).get("Running", False)
            self.terminal.open_button.setEnabled(bool(running))
            self.terminal.title.setText(
                f"Shell in {name}: click Open shell"
                if running
                else f"{name} is not running: start it to open a shell"
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

    def _targets(self, verb: str) -> list[dict[str, Any]]:
        """The selected containers `verb` applies to (start: stopped ones, stop: running ones), not busy."""
        out = []
        for c in self.selected():
            running = bool(c.get("State", {}).get("Running"))
            if c["Id"] in self.pending or (verb == "start" and running) or (verb == "stop" and not running):
                continue
            out.append(c)
        return out

    def _update_buttons(self) -> None:
        for verb in ("start", "stop", "restart", "remove"):
            self.buttons[verb].setEnabled(bool(self._targets(verb)))

    def menu_actions(self) -> list[tuple[str, Any, bool]]:
        picked = self.selected()
        one = picked[0] if len(picked) == 1 else None
        n = f" {len(picked)} containers" if len(picked) > 1 else ""
        running = bool(one and one.get("State", {}).get("Running"))
        out: list[tuple[str, Any, bool]] = [
            (f"Start{n}", lambda: self.act("start"), bool(self._targets("start"))),
            (f"Stop{n}", lambda: self.act("stop"), bool(self._targets("stop"))),
            (f"Restart{n}", lambda: self.act("restart"), bool(self._targets("restart"))),
            (f"Remove{n}…", lambda: self.act("remove"), bool(self._targets("remove"))),
            ("", lambda: None, True),
        ]
        for label, url in port_links(one) if one else []:
            out.append((f"Open {label.split(' → ')[0]} in a browser", lambda u=url: self.open_link(u), True))
        ids = "\n".join(c["Id"][:12] for c in picked)
        out += [
            ("Copy ID", lambda: QGuiApplication.clipboard().setText(ids), bool(picked)),
            ("Logs", lambda: self.tabs.setCurrentWidget(self.logs), one is not None),
            ("Terminal", self._open_terminal, running),
            ("Inspect", lambda: self.tabs.setCurrentWidget(self.inspect), one is not None),
            ("Stats", lambda: self.tabs.setCurrentWidget(self.stats), running),
        ]
        return out

    def _open_terminal(self) -> None:
        self.tabs.setCurrentWidget(self.terminal)
        if self.terminal.thread is None:
            self.open_shell()

    # -- verbs --------------------------------------------------------------------------------------------
    def act(self, verb: str) -> None:
        """`verb` on every selected container it applies to; one confirmation for a remove, and each
        failure listed by name."""
        targets = self._targets(verb)
        if not targets:
            return
        names = [c["_summary"]["Names"] for c in targets]
        running = [c["_summary"]["Names"] for c in targets if c.get("State", {}).get("Running")]
        if verb == "remove":
            if len(targets) == 1:
                text = f"Remove container '{names[0]}'?" + (
                    " It is running: it will be killed." if running else ""
                )
            else:
                text = f"Remove {len(targets)} containers ({', '.join(names)})?"
                text += f" Running ones are killed: {', '.join(running)}." if running else ""
            if not self.confirm(text):
                return
        dc, gen = self.client(), self._gen

        def worker(cid: str, name: str) -> Any:
            def work() -> None:
                with containers.api_errors(f"{verb} {name}"):
                    container = dc.containers.get(cid)
                    if verb == "start":
                        containers.start(container)
                    elif verb == "stop":
                        container.stop(timeout=10)
                    elif verb == "restart":
                        container.restart(timeout=10)
                    else:
                        container.remove(force=True)

            return work

        ids = {c["Id"] for c in targets}
        shown = self.current_id() in ids
        if shown and (verb == "remove" or (verb in ("stop", "restart") and self.terminal.thread is not None)):
            self._clear_details()
        for cid in ids:
            self.pending[cid] = verb
        self.table.set_rows([r | {"_pending": PENDING[verb]} if r["Id"] in ids else r for r in self.rows])
        self.banner.hide()
        self._update_buttons()

        def finished(result: BulkResult) -> None:
            if gen != self._gen:
                return
            for cid in ids:
                self.pending.pop(cid, None)
            self._detail_for = ""
            error = result.error()
            if error is not None:
                self.banner.show_error(error)
            if len(targets) > 1:
                self.notice.emit(result.summary())
            self._refreshing = False  # a list asked before the verb ended is stale: refresh drops it
            self.refresh()

        self.run_bulk(
            verb,
            "container",
            [(c["_summary"]["Names"], worker(c["Id"], c["_summary"]["Names"])) for c in targets],
            finished,
        )

    def shutdown(self) -> None:
        self.timer.stop()
        self._close_client()
