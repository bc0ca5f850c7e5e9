"""The Exec terminal's scrollback: lines that scrolled off the pyte screen are shown again with the mouse
wheel and Shift+PgUp/PgDn, stay put while new output arrives, and typing returns to the live screen; then the
same with a real TTY exec printing more lines than the screen holds."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication
from support.gui import engine_factory, wait_idle

from pymachine.app.gui.exec_terminal import ExecTerminal
from pymachine.app.gui.terminal_widget import TerminalWidget

SHIFT = Qt.KeyboardModifier.ShiftModifier


def shown(term: TerminalWidget) -> list[str]:
    """The rows the widget paints now (the scrollback view or the live screen)."""
    cols = term.term.size[0]
    return ["".join(row[x].data for x in range(cols)).rstrip() for row in term.term.rows(term.back)]


def wheel(term: TerminalWidget, notches: int) -> None:
    centre = QPointF(term.width() / 2, term.height() / 2)
    event = QWheelEvent(
        centre,
        QPointF(term.mapToGlobal(centre.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(term, event)


def test_wheel_and_shift_page_keys_scroll_the_history(qtbot) -> None:
    term = TerminalWidget()
    qtbot.addWidget(term)
    term.resize(500, 220)
    with qtbot.waitExposed(term):
        term.show()
    cols, rows = term.term.size
    term.feed("".join(f"line-{i}\r\n" for i in range(1, 101)))
    assert shown(term)[-2] == "line-100" and "line-1" not in shown(term)
    assert term.term.history_lines >= 100 - rows

    wheel(term, 2)  # two notches up: six lines back
    assert term.back == 6
    assert shown(term)[-2] == "line-94"
    wheel(term, -1)
    assert term.back == 3 and shown(term)[-2] == "line-97"

    term.setFocus()
    sent: list[bytes] = []
    term.send.connect(sent.append)
    qtbot.keyClick(term, Qt.Key.Key_PageUp, SHIFT)  # a page (minus one line) per press, as xterm
    assert term.back == 3 + rows - 1
    for _ in range(100):  # past the top: it stops at the oldest line
        qtbot.keyClick(term, Qt.Key.Key_PageUp, SHIFT)
    assert shown(term)[0] == "line-1" and term.back == term.term.history_lines
    assert sent == []  # Shift+PgUp is the terminal's own, not sent to the program

    qtbot.keyClick(term, Qt.Key.Key_PageDown, SHIFT)
    assert term.back == term.term.history_lines - (rows - 1) and shown(term)[0] == f"line-{rows}"

    # new output while scrolled back: the lines being read stay where they are
    term.feed("".join(f"more-{i}\r\n" for i in range(5)))
    assert shown(term)[0] == f"line-{rows}"
    qtbot.keyClick(term, Qt.Key.Key_PageUp)  # without Shift, PgUp goes to the program
    assert sent == [b"\x1b[5~"] and term.back == 0  # and typing returns to the live screen
    assert shown(term)[-2] == "more-4"
    assert not term.grab().toImage().isNull()


def test_scrollback_of_a_real_tty_exec(qtbot, gui_home: Path, agent_engine) -> None:
    dc = engine_factory(agent_engine)("m")
    c = agent_engine.client().containers.run(
        "pymachine/busybox", ["sleep", "600"], name="gui-scroll", detach=True
    )
    try:
        term = ExecTerminal()
        qtbot.addWidget(term)
        term.resize(700, 360)
        with qtbot.waitExposed(term):
            term.show()
        term.open(dc, c.id, "gui-scroll")
        qtbot.waitUntil(term.input.isEnabled, timeout=30000)
        term.screen.setFocus()
        qtbot.keyClicks(term.screen, "seq 1 300 | sed s/^/n-/")
        qtbot.keyClick(term.screen, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: any(line == "n-300" for line in shown(term.screen)), timeout=30000)
        assert "n-1" not in shown(term.screen)  # scrolled off the live screen
        for _ in range(200):
            wheel(term.screen, 5)
            if "n-1" in shown(term.screen):
                break
        assert "n-1" in shown(term.screen) and "n-2" in shown(term.screen)
        qtbot.keyClicks(term.screen, "echo back-$((2*4))")  # typing: the live screen again
        qtbot.keyClick(term.screen, Qt.Key.Key_Return)
        assert term.screen.back == 0
        qtbot.waitUntil(lambda: "back-8" in "\n".join(shown(term.screen)), timeout=30000)
        term.stop()
        wait_idle(qtbot)
    finally:
        c.remove(force=True)
