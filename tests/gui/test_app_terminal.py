"""The Exec terminal: escape handling through pyte and key bytes (pure), then a real TTY exec in a container
on a real engine: typed keys, Ctrl+C interrupting a command, `top` drawn on the screen (no raw escape codes),
the TTY resized with the widget (`stty size` inside agrees) and Ctrl+D ending the shell."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QMainWindow
from support.gui import engine_factory, wait_idle

from pymachine.app.gui.exec_terminal import ExecTerminal
from pymachine.app.gui.terminal_widget import TerminalScreen, TerminalWidget, key_bytes

CTRL = Qt.KeyboardModifier.ControlModifier
NONE = Qt.KeyboardModifier.NoModifier


def test_escapes_through_the_screen_model() -> None:
    t = TerminalScreen(20, 5)
    t.feed("junk\x1b[2J\x1b[1;1Hhello \x1b[31mred\x1b[0m\r\nline2\x1b[3;5HX")
    lines = t.lines()
    assert lines[0] == "hello red" and lines[1] == "line2" and lines[2] == "    X"
    assert t.screen.buffer[0][6].fg == "red" and t.screen.buffer[0][0].fg == "default"
    t.feed("\x1b[1;1H\x1b[2K")  # erase line
    assert t.lines()[0] == ""
    t.feed("\x1b[?25l")  # cursor hidden, as top does
    assert t.screen.cursor.hidden
    for i in range(10):  # scrolled lines go to the scrollback, still in the text
        t.feed(f"\r\nrow{i}")
    assert "row0" in t.text() and t.lines()[-1] == "row9"
    t.resize(30, 8)
    assert t.size == (30, 8)
    assert "\x1b" not in t.text()
    answers: list[str] = []
    asked = TerminalScreen(20, 5, reply=answers.append)
    asked.feed("ab\x1b[6n")  # where is the cursor? (busybox sh asks at every prompt)
    assert answers == ["\x1b[1;3R"]


def test_key_bytes() -> None:
    assert key_bytes(Qt.Key.Key_C, CTRL, "\x03") == b"\x03"
    assert key_bytes(Qt.Key.Key_D, CTRL, "\x04") == b"\x04"
    assert key_bytes(Qt.Key.Key_Up, NONE, "") == b"\x1b[A"
    assert key_bytes(Qt.Key.Key_Return, NONE, "\r") == b"\r"
    assert key_bytes(Qt.Key.Key_Backspace, NONE, "\x08") == b"\x7f"
    assert key_bytes(Qt.Key.Key_A, NONE, "ä") == "ä".encode()
    assert key_bytes(Qt.Key.Key_Shift, Qt.KeyboardModifier.ShiftModifier, "") == b""


def test_ctrl_keys_reach_the_terminal_before_window_shortcuts(qtbot) -> None:
    window = QMainWindow()
    term = TerminalWidget()
    window.setCentralWidget(term)
    qtbot.addWidget(window)
    fired: list[str] = []
    QShortcut(QKeySequence("Ctrl+C"), window, lambda: fired.append("copy"))
    QShortcut(QKeySequence("Ctrl+D"), window, lambda: fired.append("d"))
    with qtbot.waitExposed(window):
        window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=30000)
    term.setFocus()
    got: list[bytes] = []
    term.send.connect(got.append)
    qtbot.keyClick(term, Qt.Key.Key_C, CTRL)
    qtbot.keyClick(term, Qt.Key.Key_D, CTRL)
    qtbot.keyClick(term, Qt.Key.Key_Tab)
    assert got == [b"\x03", b"\x04", b"\t"] and fired == []
    assert term.hasFocus()  # Tab completed, not moved focus


def _type(qtbot, term: ExecTerminal, text: str) -> None:
    for ch in text:
        if ch == "\r":
            qtbot.keyClick(term.screen, Qt.Key.Key_Return)
        else:
            qtbot.keyClicks(term.screen, ch)


def test_a_real_tty_shell(qtbot, gui_home: Path, agent_engine) -> None:
    dc = engine_factory(agent_engine)("m")
    c = agent_engine.client().containers.run(
        "pymachine/busybox", ["sleep", "600"], name="gui-tty", detach=True
    )
    try:
        term = ExecTerminal()
        qtbot.addWidget(term)
        term.resize(820, 420)
        with qtbot.waitExposed(term):
            term.show()
        term.open(dc, c.id, "gui-tty")
        term.resize(900, 460)  # laid out again while the exec is being made: the TTY gets the final size
        qtbot.waitUntil(term.input.isEnabled, timeout=30000)
        cols, rows = term.screen.grid_size()
        qtbot.waitUntil(lambda: term.sizes_sent[-1:] == [(cols, rows)], timeout=30000)

        _type(qtbot, term, "echo $((6*7))\r")
        qtbot.waitUntil(lambda: "\n42" in term.contents(), timeout=30000)
        _type(qtbot, term, "stty size\r")
        qtbot.waitUntil(lambda: f"{rows} {cols}" in term.contents(), timeout=30000)

        # Ctrl+C interrupts the foreground command; the shell lives on
        _type(qtbot, term, "sleep 300; echo not-$((2+3))-interrupted\r")
        qtbot.wait(500)
        qtbot.keyClick(term.screen, Qt.Key.Key_C, CTRL)
        _type(qtbot, term, "echo after-$((1+1))\r")
        qtbot.waitUntil(lambda: "after-2" in term.contents(), timeout=30000)
        assert "not-5-interrupted" not in term.contents()

        # a full-screen program draws on the screen: no escape codes leak into the text
        _type(qtbot, term, "top\r")
        qtbot.waitUntil(lambda: any("PID" in line for line in term.screen.term.lines()), timeout=30000)
        assert "\x1b" not in term.contents() and "[H" not in "".join(term.screen.term.lines())
        screenshot = term.grab().toImage()
        assert not screenshot.isNull()
        qtbot.keyClicks(term.screen, "q")  # top quits on q: the shell reads the next line again
        _type(qtbot, term, "echo top-$((3*3))-done\r")
        qtbot.waitUntil(lambda: "top-9-done" in term.contents(), timeout=30000)

        # the widget grows: the TTY is told, and programs in it see the new size
        term.resize(1000, 560)
        new = term.screen.grid_size()
        assert new != (cols, rows)
        qtbot.waitUntil(lambda: new in term.sizes_sent, timeout=30000)
        _type(qtbot, term, "stty size\r")
        qtbot.waitUntil(lambda: f"{new[1]} {new[0]}" in term.contents(), timeout=30000)

        # Ctrl+D at the prompt ends the shell
        qtbot.keyClick(term.screen, Qt.Key.Key_D, CTRL)
        qtbot.waitUntil(lambda: "[shell ended with exit code 0]" in term.contents(), timeout=30000)
        qtbot.waitUntil(lambda: not term.input.isEnabled(), timeout=10000)
        wait_idle(qtbot)
        term.stop()
    finally:
        c.remove(force=True)


def test_a_stopped_terminal_does_not_wait_for_the_shells_exit(qtbot, gui_home: Path, agent_engine) -> None:
    """Stopping (another container selected, the window closing) ends the stream's thread at once: it does
    not ask the engine for the exit code nobody will see. It did, up to 20 times, and outlived the exit's
    wait for retired threads: Qt aborted make_screenshots.py at its end (exit 134)."""
    dc = engine_factory(agent_engine)("m")
    c = agent_engine.client().containers.run(
        "pymachine/busybox", ["sleep", "600"], name="gui-tty-stop", detach=True
    )
    try:
        term = ExecTerminal()
        qtbot.addWidget(term)
        term.open(dc, c.id, "gui-tty-stop")
        qtbot.waitUntil(term.input.isEnabled, timeout=30000)
        asked: list[str] = []
        real = dc.api.exec_inspect
        dc.api.exec_inspect = lambda exec_id: (asked.append(exec_id), real(exec_id))[1]
        thread = term.thread
        assert thread is not None
        term.stop()  # the shell is still running: its stdin closes with the socket
        qtbot.waitUntil(thread.isFinished, timeout=30000)
        assert asked == []
    finally:
        c.remove(force=True)


def test_runs_of_text_fit_their_cells(qtbot) -> None:
    """A run is drawn as one string: its width must be its cells' (top's reverse-video header lost its last
    letter when the cell width was the font's advance rounded down)."""
    from PySide6.QtGui import QFontMetricsF

    term = TerminalWidget()
    qtbot.addWidget(term)
    fm = QFontMetricsF(term.font())
    header = "  PID  PPID USER     STAT   VSZ %VSZ %CPU COMMAND"
    assert abs(fm.horizontalAdvance(header) - len(header) * term._cell[0]) < 1.0
