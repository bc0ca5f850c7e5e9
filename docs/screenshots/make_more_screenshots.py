"""Take the screenshots of multi-select, the right-click menu, the Apps tab and a desktop notification, under
an X server with a window manager and a notification daemon, against a real guest agent on this host (root;
no VM boot: `pymachine gui --engine` shows that engine the same way):

    Xvfb :58 -screen 0 1440x900x24 & DISPLAY=:58 openbox &
    export DBUS_SESSION_BUS_ADDRESS=$(dbus-daemon --session --fork --print-address=1)
    DISPLAY=:58 dunst &
    export PYMACHINE_HOME=/tmp/shots2-home PYMACHINE_CACHE=/var/tmp/pymachine-test-cache
    DISPLAY=:58 python docs/screenshots/make_more_screenshots.py docs/screenshots

Writes multi-select.png, context-menu.png, apps.png (an app deployed as the deploy code records it, its
serving container on the engine) and notification.png (a real start failure while the window is minimised).
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QDeadlineTimer, QThread
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from support.agent import start_agent  # noqa: E402
from support.gui import engine_factory  # noqa: E402

from pymachine.app.gui import workers  # noqa: E402
from pymachine.app.gui.main import make_app  # noqa: E402
from pymachine.app.gui.main_window import MainWindow  # noqa: E402
from pymachine.hostvm import images_io, machines, paths  # noqa: E402
from pymachine.hostvm.container_images import ensure_container_image  # noqa: E402
from pymachine.hostvm.deploy import apps, model  # noqa: E402
from pymachine.hostvm.deploy.model import LABEL, RELEASE_LABEL, Release  # noqa: E402


def settle(app: QApplication, ms: int = 1200) -> None:
    deadline = QDeadlineTimer(30000)
    while workers.busy() and not deadline.hasExpired():
        app.processEvents()
        QThread.msleep(20)
    deadline = QDeadlineTimer(ms)
    while not deadline.hasExpired():
        app.processEvents()
        QThread.msleep(20)


def grab(app: QApplication, path: Path, x: int = 0, y: int = 0, w: int = -1, h: int = -1) -> None:
    settle(app, 800)
    app.primaryScreen().grabWindow(0, x, y, w, h).save(str(path))
    print(path)


def main(out: str) -> int:
    folder = Path(out)
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(1))  # killed: the agent below still stops
    agent = start_agent(Path(tempfile.mkdtemp(prefix="shots2-")))
    try:
        dc = agent.client()
        images_io.load(dc, str(ensure_container_image("pymachine/busybox")))
        for name, cmd, ports in (
            ("web", ["httpd", "-f", "-p", "80"], {"80/tcp": 38080}),
            ("api", ["httpd", "-f", "-p", "3000"], {"3000/tcp": 33000}),
            ("worker", ["sleep", "100000"], None),
            ("queue", ["sleep", "100000"], None),
        ):
            dc.containers.run("pymachine/busybox", cmd, name=name, ports=ports, detach=True)
        dc.containers.run("pymachine/busybox", ["true"], name="migrate", detach=True).wait(timeout=60)
        if not machines.exists("dev"):
            machines.create("dev", cpus=2, memory="1G", driver="qemu")
        if not machines.exists("broken"):  # its start fails in its first stage: the notification
            machines.create("broken", cpus=1, memory="512M", driver="qemu")
            cfg = json.loads(paths.machine("broken").config.read_text())
            cfg["image"]["kernel"] = "/nonexistent/vmlinuz"
            paths.machine("broken").config.write_text(json.dumps(cfg))
        for name, port in (("shop", 38081), ("blog", 38082)):
            if name not in model.names():
                apps.create(name, "dev", port)
        image = dc.images.get("pymachine/busybox").id
        shop = model.load("shop")
        if not shop.releases:
            for text in ("push 3f9c2a1", "push 8be41d0", "config set GREETING"):
                shop = shop.with_release(
                    Release(shop.next_version, image, {"GREETING": "hi"}, time.time(), text, "3f9c2a1" * 5)
                )
            model.save(shop)
        dc.containers.run(
            "pymachine/busybox",
            ["sh", "-c", "echo 'listening on :38081'; while :; do echo 'GET / 200'; sleep 2; done"],
            name="app-shop-v3",
            labels={LABEL: "shop", RELEASE_LABEL: "3"},
            detach=True,
        )

        app = make_app()
        window = MainWindow(client_factory=engine_factory(agent), tray=False, engine_override=True)
        window.resize(1200, 720)
        window.move(40, 30)
        window.show()
        settle(app)
        window.machines.select("dev")
        settle(app)

        panel = window.containers
        window.show_tab("containers")
        settle(app, 2500)
        keys = {r["_summary"]["Names"]: r["Id"] for r in panel.rows}
        panel.table.select_keys([keys["web"], keys["api"], keys["worker"]])
        view = panel.table.view
        index = panel.table.proxy.mapFromSource(
            panel.table.model.index(panel.table.model.row_of(keys["api"]), 0)
        )
        panel.table._menu_at(view.visualRect(index).center())
        geo = window.frameGeometry()
        grab(app, folder / "multi-select.png", geo.x(), geo.y(), geo.width(), geo.height())
        panel.menu.close()

        panel.table.select_keys([keys["web"]])
        index = panel.table.proxy.mapFromSource(
            panel.table.model.index(panel.table.model.row_of(keys["web"]), 0)
        )
        panel.table._menu_at(view.visualRect(index).center())
        grab(app, folder / "context-menu.png", geo.x(), geo.y(), geo.width(), geo.height())
        panel.menu.close()

        window.show_tab("apps")
        settle(app, 2000)
        window.apps.select("shop")
        window.apps.act("logs")
        settle(app, 2500)
        grab(app, folder / "apps.png", geo.x(), geo.y(), geo.width(), geo.height())

        window.show_tab("machines")
        window.showMinimized()  # not in front: the failure comes as a desktop notification
        settle(app)
        window.machines.run_verb("start", "broken")
        deadline = QDeadlineTimer(60000)
        while not window.notifier.sent and not deadline.hasExpired():
            app.processEvents()
            QThread.msleep(50)
        settle(app, 2500)
        grab(app, folder / "notification.png")
        print("notifications:", window.notifier.sent, window.notifier.failed)
        window.shutdown()
        return 0
    finally:
        agent.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
