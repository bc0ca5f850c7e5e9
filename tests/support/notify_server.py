"""A desktop's notification daemon for the GUI tests, in a process of its own: it owns
org.freedesktop.Notifications on the bus at argv[1] and appends each Notify call to the JSON-lines file at
argv[2]; "ready" on stdout once the name is taken.

Why a process of its own: served from the test process, Qt's D-Bus thread destroyed QObjects while holding a
Qt lock and waiting for the GIL, as the GUI thread held the GIL and waited for that lock (a deadlock seen in 1
of 3 GUI tier runs under load: gdb showed both stacks). Here nothing else runs Python.

    python notify_server.py unix:path=/tmp/x/bus /tmp/x/got.jsonl
"""

from __future__ import annotations

import json
import sys

from PySide6.QtCore import QCoreApplication, QObject, Slot
from PySide6.QtDBus import QDBusConnection


class NotificationServer(QObject):
    """org.freedesktop.Notifications as a desktop's notification daemon offers it (Notify only)."""

    def __init__(self, record: str) -> None:
        super().__init__()
        self.record = record
        self.count = 0

    @Slot(str, "uint", str, str, str, "QStringList", "QVariantMap", int, result="uint")
    def Notify(self, app, _replaces, _icon, summary, body, _actions, hints, timeout):  # noqa: ANN001, ANN201, N802
        self.count += 1
        with open(self.record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps([app, summary, body, dict(hints), timeout], default=str) + "\n")
        return self.count


def main(address: str, record: str) -> int:
    app = QCoreApplication([])
    bus = QDBusConnection.connectToBus(address, "notify-server")
    server = NotificationServer(record)
    if not bus.registerObject(
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications",
        server,
        QDBusConnection.RegisterOption.ExportAllSlots,
    ) or not bus.registerService("org.freedesktop.Notifications"):
        print(f"cannot serve org.freedesktop.Notifications: {bus.lastError().message()}", flush=True)
        return 1
    print("ready", flush=True)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
