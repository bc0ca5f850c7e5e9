"""A terminal in a widget: a pyte VT100 screen fed with a TTY's output, painted with QPainter, and keys turned
into the bytes a terminal sends (Ctrl+C is 0x03, arrows are ESC [ A …). Resizing the widget resizes the screen
and says so (`resized(cols, rows)`) so the caller can resize the TTY on the other end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyte
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QKeyEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from .common import mono_font

# xterm's 16 colours; pyte names the 8 base ones and "bright…" ones, or gives 6 hex digits for 256/true colour
PALETTE = {
    "black": "#000000",
    "red": "#cd3131",
    "green": "#0dbc79",
    "brown": "#e5e510",
    "yellow": "#e5e510",
    "blue": "#2472c8",
    "magenta": "#bc3fbc",
    "cyan": "#11a8cd",
    "white": "#e5e5e5",
    "brightblack": "#666666",
    "brightred": "#f14c4c",
    "brightgreen": "#23d18b",
    "brightbrown": "#f5f543",
    "brightyellow": "#f5f543",
    "brightblue": "#3b8eea",
    "brightmagenta": "#d670d6",
    "brightcyan": "#29b8db",
    "brightwhite": "#ffffff",
}
DEFAULT_FG, DEFAULT_BG = "#d4d4d4", "#1e1e1e"
WHEEL_LINES = 3  # lines per wheel notch, as most terminals

KEYS = {
    Qt.Key.Key_Return: b"\r",
    Qt.Key.Key_Enter: b"\r",
    Qt.Key.Key_Backspace: b"\x7f",
    Qt.Key.Key_Tab: b"\t",
    Qt.Key.Key_Escape: b"\x1b",
    Qt.Key.Key_Up: b"\x1b[A",
    Qt.Key.Key_Down: b"\x1b[B",
    Qt.Key.Key_Right: b"\x1b[C",
    Qt.Key.Key_Left: b"\x1b[D",
    Qt.Key.Key_Home: b"\x1b[H",
    Qt.Key.Key_End: b"\x1b[F",
    Qt.Key.Key_PageUp: b"\x1b[5~",
    Qt.Key.Key_PageDown: b"\x1b[6~",
    Qt.Key.Key_Insert: b"\x1b[2~",
    Qt.Key.Key_Delete: b"\x1b[3~",
    Qt.Key.Key_F1: b"\x1bOP",
    Qt.Key.Key_F2: b"\x1bOQ",
    Qt.Key.Key_F3: b"\x1bOR",
    Qt.Key.Key_F4: b"\x1bOS",
}


def key_bytes(key: int, modifiers: Qt.KeyboardModifier, text: str) -> bytes:
    """The bytes a VT100/xterm sends for a key press ('' for keys it sends nothing for)."""
    ctrl = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
    if ctrl and Qt.Key.Key_A <= key <= Qt.Key.Key_Z:
        return bytes([key - Qt.Key.Key_A + 1])  # Ctrl+C → 0x03, Ctrl+D → 0x04
    if ctrl and key in (Qt.Key.Key_BracketLeft, Qt.Key.Key_Space, Qt.Key.Key_Backslash):
        return {Qt.Key.Key_BracketLeft: b"\x1b", Qt.Key.Key_Space: b"\x00", Qt.Key.Key_Backslash: b"\x1c"}[
            key
        ]
    if key in KEYS:
        return KEYS[key]
    return text.encode() if text else b""


def colour(name: str, default: str) -> QColor:
    if name == "default":
        return QColor(default)
    if name in PALETTE:
        return QColor(PALETTE[name])
    if len(name) == 6:
        return QColor(f"#{name}")
    return QColor(default)


class _Screen(pyte.HistoryScreen):
    """pyte's screen; what the terminal must answer (a cursor position report for ESC [ 6 n, which busybox
    sh asks at every prompt) goes to `reply`."""

    reply: Callable[[str], None] | None = None

    def write_process_input(self, data: str) -> None:
        if self.reply is not None:
            self.reply(data)


class TerminalScreen:
    """A pyte screen with scrollback, fed with text (decoded on the reading thread)."""

    def __init__(
        self, cols: int = 80, rows: int = 24, history: int = 2000, reply: Callable[[str], None] | None = None
    ) -> None:
        self.screen = _Screen(cols, rows, history=history, ratio=0.5)
        self.screen.reply = reply
        self.screen.set_mode(pyte.modes.LNM)  # a lone LF starts the line too, as a terminal's tty does
        self.stream = pyte.Stream(self.screen)

    def feed(self, text: str) -> None:
        self.stream.feed(text)

    def resize(self, cols: int, rows: int) -> None:
        self.screen.resize(rows, cols)

    @property
    def size(self) -> tuple[int, int]:
        return self.screen.columns, self.screen.lines

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    @property
    def history_lines(self) -> int:
        return len(self.screen.history.top)

    def rows(self, back: int = 0) -> list[Any]:
        """The screen's rows as seen `back` lines up into the scrollback (0: the live screen)."""
        top = self.screen.history.top
        back = max(0, min(back, len(top)))
        n = self.screen.lines
        if not back:
            return [self.screen.buffer[y] for y in range(n)]
        old = list(top)[len(top) - back :]
        return (old + [self.screen.buffer[y] for y in range(n)])[:n]

    def text(self) -> str:
        """Scrollback and screen as plain text (for tests and copy)."""
        cols = self.screen.columns
        old = ["".join(line[x].data for x in range(cols)).rstrip() for line in self.screen.history.top]
        return "\n".join([*old, *self.lines()]).rstrip("\n")


class TerminalWidget(QWidget):
    send = Signal(bytes)  # what the keyboard typed, for the TTY
    answer = Signal(bytes)  # what the terminal answers a program's query with
    resized = Signal(int, int)  # cols, rows

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.term = TerminalScreen(reply=self._reply)
        self.setFont(mono_font())
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 60)
        self.placeholder = ""
        self.back = 0  # lines scrolled up into the scrollback (the wheel, Shift+PgUp/PgDn); 0 = live
        self._cell = (8, 16)
        self._measure()

    def _measure(self) -> None:
        # the font's real (fractional) advance: rounded, a run of text drew wider than its cells and a
        # reverse-video header lost its last letter past the highlighted cells
        fm = QFontMetricsF(self.font())
        self._cell = (max(1.0, fm.horizontalAdvance("M")), max(1.0, fm.height()))

    def grid_size(self) -> tuple[int, int]:
        w, h = self._cell
        return max(10, int((self.width() - 4) / w)), max(3, int((self.height() - 4) / h))

    def feed(self, text: str) -> None:
        before = self.term.history_lines
        self.term.feed(text)
        if self.back:  # scrolled up: the lines read stay put while new output arrives below
            self.back = min(self.term.history_lines, self.back + self.term.history_lines - before)
        self.update()

    def reset(self) -> None:
        cols, rows = self.grid_size()
        self.term = TerminalScreen(cols, rows, reply=self._reply)
        self.back = 0
        self.update()

    def scroll_back(self, lines: int) -> None:
        """Up (positive) or down (negative) through the scrollback, within what it holds."""
        back = max(0, min(self.term.history_lines, self.back + lines))
        if back != self.back:
            self.back = back
            self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.scroll_back(round(steps * WHEEL_LINES) or (1 if steps > 0 else -1))
            event.accept()

    def _reply(self, data: str) -> None:
        self.answer.emit(data.encode())

    # -- Qt -----------------------------------------------------------------------------------------------
    def resizeEvent(self, event: QResizeEvent) -> None:
        cols, rows = self.grid_size()
        if (cols, rows) != self.term.size:
            self.term.resize(cols, rows)
            self.resized.emit(cols, rows)
        super().resizeEvent(event)

    def event(self, e: QEvent) -> bool:
        # the terminal gets Ctrl+letter and Tab before the window's shortcuts and focus chain do
        if e.type() == QEvent.Type.ShortcutOverride and isinstance(e, QKeyEvent):
            mods = e.modifiers()
            ctrl = mods & Qt.KeyboardModifier.ControlModifier and not mods & Qt.KeyboardModifier.ShiftModifier
            if ctrl and Qt.Key.Key_A <= e.key() <= Qt.Key.Key_Z:
                e.accept()
                return True
        if (
            e.type() == QEvent.Type.KeyPress
            and isinstance(e, QKeyEvent)
            and e.key() in (Qt.Key.Key_Tab, Qt.Key.Key_Backtab)
        ):
            self.keyPressEvent(e)
            return True
        return super().event(e)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        page = event.key() in (Qt.Key.Key_PageUp, Qt.Key.Key_PageDown)
        if page and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:  # as xterm: the terminal's own
            half = max(1, self.term.size[1] - 1)
            self.scroll_back(half if event.key() == Qt.Key.Key_PageUp else -half)
            event.accept()
            return
        data = key_bytes(event.key(), event.modifiers(), event.text())
        if data:
            if self.back:  # typing returns to the live screen, as terminals do
                self.back = 0
                self.update()
            self.send.emit(data)
            event.accept()
        else:
            super().keyPressEvent(event)

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(DEFAULT_BG))
        w, h = self._cell
        screen = self.term.screen
        base = QFont(self.font())
        ascent = QFontMetricsF(base).ascent()
        if self.placeholder and not any(self.term.lines()):
            p.setPen(QColor("#8a8a8a"))
            p.drawText(self.rect().adjusted(8, 8, -8, -8), int(Qt.TextFlag.TextWordWrap), self.placeholder)
            return
        for y, row in enumerate(self.term.rows(self.back)):
            x = 0
            while x < screen.columns:  # runs of cells with the same look, drawn as one string
                first = row[x]
                look = (first.fg, first.bg, first.bold, first.underscore, first.reverse)
                text = []
                start = x
                while x < screen.columns:
                    ch = row[x]
                    if (ch.fg, ch.bg, ch.bold, ch.underscore, ch.reverse) != look:
                        break
                    text.append(ch.data or " ")
                    x += 1
                fg, bg = colour(look[0], DEFAULT_FG), colour(look[1], DEFAULT_BG)
                if look[4]:
                    fg, bg = bg, fg
                if bg != QColor(DEFAULT_BG):
                    p.fillRect(QRectF(2 + start * w, 2 + y * h, (x - start) * w, h), bg)
                chunk = "".join(text)
                if chunk.strip():
                    font = QFont(base)
                    font.setBold(look[2])
                    font.setUnderline(look[3])
                    p.setFont(font)
                    p.setPen(fg)
                    p.drawText(QPointF(2 + start * w, 2 + y * h + ascent), chunk)
        if self.back:  # say that this is the scrollback, and how to get back
            note = f" ↑ {self.back} lines back — Shift+PgDn or type to return "
            p.setFont(base)
            fm = QFontMetricsF(base)
            box = QRectF(self.width() - fm.horizontalAdvance(note) - 6, 2, fm.horizontalAdvance(note) + 4, h)
            p.fillRect(box, QColor("#3b8eea"))
            p.setPen(QColor("#ffffff"))
            p.drawText(box, int(Qt.AlignmentFlag.AlignCenter), note)
        elif not screen.cursor.hidden and self.hasFocus():
            cx, cy = screen.cursor.x, screen.cursor.y
            p.fillRect(QRectF(2 + cx * w, 2 + cy * h, w, h), QColor(200, 200, 200, 140))
