"""Desktop notifications for what a machine verb ends in: start done, stop done, a failure.

As Docker Desktop does, a notification is only for someone not looking at the window (hidden in the tray,
minimised, or another application in front): with the window focused, its progress bar, status bar and error
banner already say it. Where a tray exists the tray icon shows the message; elsewhere the platform's own
notifications are used — the freedesktop notification service over D-Bus (`gdbus`, else `notify-send`) on
Linux, `osascript` on macOS — and with none of those nothing is shown beyond the window itself.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

from PySide6.QtCore import QObject, QProcess, QTimer
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from .common import describe

SHOW_MS = 8000


@dataclass(frozen=True)
class Note:
    title: str
    body: str
    failure: bool = False


DONE = {
    "start": ("{m} is running", "Started: docker commands and published ports reach it now."),
    "stop": ("{m} stopped", "Its containers stopped with it; start it again from the window or the tray."),
    "restart": ("{m} restarted", "Running again."),
}


def note_for(verb: str, machine: str, exc: BaseException | None) -> Note | None:
    """The notification for `verb` on `machine` ending (with `exc` when it failed); None: not worth one."""
    if exc is not None:
        message, hint = describe(exc)
        return Note(f"Couldn't {verb} {machine}", message + (f"\n{hint}" if hint else ""), True)
    if verb not in DONE:
        return None  # create/delete: asked for in the window, seen there
    title, body = DONE[verb]
    return Note(title.format(m=machine), body)


def gvariant_string(text: str) -> str:
    """`text` as a GVariant string literal: gdbus parses its arguments, so "[1]" would not stay text."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def desktop_command(note: Note, platform: str = sys.platform) -> list[str] | None:
    """The command that shows `note` with the platform's notifications, or None when there is none."""
    if platform.startswith("linux") or platform.startswith("freebsd"):
        if shutil.which("gdbus"):
            return [
                "gdbus", "call", "--session",
                "--dest", "org.freedesktop.Notifications",
                "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                "'pymachine'", "0", "'pymachine'",
                gvariant_string(note.title), gvariant_string(note.body),
                "[]", f"{{'urgency': <byte {2 if note.failure else 1}>}}", str(SHOW_MS),
            ]  # fmt: skip
        if shutil.which("notify-send"):
            urgency = "critical" if note.failure else "normal"
            return ["notify-send", "-a", "pymachine", "-u", urgency, note.title, note.body]
    if platform == "darwin" and shutil.which("osascript"):
        script = f"display notification {_applescript(note.body)} with title {_applescript(note.title)}"
        return ["osascript", "-e", script]
    return None


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Notifier(QObject):
    """Posts `Note`s for `window` through `tray` (when there is one) or the platform; `sent` keeps what was
    posted and how ("tray", "desktop"), `skipped` what the focused window showed instead."""

    def __init__(self, window: QWidget, tray: QSystemTrayIcon | None) -> None:
        super().__init__(window)
        self.window, self.tray = window, tray
        self.sent: list[tuple[str, Note]] = []
        self.skipped: list[Note] = []
        self.failed: list[str] = []  # a platform command that could not run or said no (stderr)
        self._procs: set[QProcess] = set()
        self._ended_procs: set[QProcess] = set()

    def watching(self) -> bool:
        w = self.window
        return w.isVisible() and not w.isMinimized() and w.isActiveWindow()

    def machine_verb_done(self, verb: str, machine: str, exc: object) -> None:
        note = note_for(verb, machine, exc if isinstance(exc, BaseException) else None)
        if note is None:
            return
        if self.watching():
            self.skipped.append(note)
            return
        self.post(note)

    def post(self, note: Note) -> str:
        """Show `note`; the route taken ("tray", "desktop", or "" when the platform has none)."""
        if self.tray is not None and self.tray.isVisible() and QSystemTrayIcon.supportsMessages():
            kind = (
                QSystemTrayIcon.MessageIcon.Critical
                if note.failure
                else QSystemTrayIcon.MessageIcon.Information
            )
            self.tray.showMessage(note.title, note.body, kind, SHOW_MS)
            self.sent.append(("tray", note))
            return "tray"
        command = desktop_command(note)
        if command is None:
            return ""
        proc = QProcess()  # no parent: closing the window must not kill a notification on its way
        self._procs.add(proc)
        proc.finished.connect(lambda code, _s, p=proc: self._ended(p, code))
        proc.errorOccurred.connect(lambda _e, p=proc: self._ended(p, -1))
        proc.start(command[0], command[1:])
        self.sent.append(("desktop", note))
        return "desktop"

    def _ended(self, proc: QProcess, code: int) -> None:
        if proc in self._ended_procs:
            return  # finished after errorOccurred: said once
        self._ended_procs.add(proc)
        if code != 0:  # no notification service on this desktop: the window still said it
            self.failed.append(bytes(proc.readAllStandardError().data()).decode(errors="replace").strip())
        # Python owns the parentless process: let go of it once its signal has returned (no deleteLater,
        # which would free it a second time)
        QTimer.singleShot(0, lambda: self._forget(proc))

    def _forget(self, proc: QProcess) -> None:
        self._procs.discard(proc)
        self._ended_procs.discard(proc)
