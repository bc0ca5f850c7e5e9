"""Small widgets every panel uses: the error banner (message, hint, "Show log"), empty states, formatting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFont, QFontDatabase, QKeySequence, QPainter, QPaintEvent, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from pymachine.hostvm.containers import parse_time
from pymachine.hostvm.errors import PymachineError
from pymachine.hostvm.reasons import plain_reason
from pymachine.hostvm.units import human_duration

LOG_TAIL_BYTES = 256 * 1024


def uptime(started_at: str, now: dt.datetime | None = None) -> str:
    """How long a container has run (from its RFC 3339 `StartedAt`), as `docker ps` says it; '' if unknown."""
    started = parse_time(started_at)
    if started is None:
        return ""
    return human_duration(((now or dt.datetime.now(dt.UTC)) - started).total_seconds())


def mono_font() -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font


def read_tail(path: str | Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror or exc})"


class LogDialog(QDialog):
    """The tails of one or more log files (console log, host-agent log), read-only, one tab each."""

    def __init__(self, path: str | Path, parent: QWidget | None = None, *more: str | Path) -> None:
        super().__init__(parent)
        paths = [Path(path), *(Path(p) for p in more)]
        self.setWindowTitle(f"Log — {paths[0].name}")
        self.resize(900, 560)
        self.texts: list[QPlainTextEdit] = []
        tabs = QTabWidget()
        for p in paths:
            text = QPlainTextEdit(readOnly=True)
            text.setFont(mono_font())
            text.setPlainText(read_tail(p))
            text.moveCursor(text.textCursor().MoveOperation.End)
            page = QWidget()
            lay = QVBoxLayout(page)
            lay.addWidget(QLabel(str(p), textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse))
            lay.addWidget(text)
            tabs.addTab(page, p.name)
            self.texts.append(text)
        self.text = self.texts[0]
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addWidget(buttons)


class ErrorBanner(QWidget):
    """A failure as the CLI prints it: what happened, the hint, and "Show log" when there is a log."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("errorBanner")
        self._style()
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.message = QLabel(
            wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse
        )
        self.hint = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.show_log = QPushButton("Show log")
        self.show_log.clicked.connect(self._open_log)
        close = QPushButton("Dismiss")
        close.clicked.connect(self.hide)
        text = QVBoxLayout()
        text.addWidget(self.message)
        text.addWidget(self.hint)
        lay = QHBoxLayout(self)
        lay.addLayout(text, 1)
        lay.addWidget(self.show_log, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.log_path: str | None = None
        self.dialog: LogDialog | None = None
        self.hide()

    def _style(self) -> None:
        from .theme import is_dark

        light = (
            "#errorBanner { background: #fdecea; border: 1px solid #f5c2c0; border-radius: 4px; }"
            "QLabel { color: #611a15; }"
        )
        dark = (
            "#errorBanner { background: #3c1f1e; border: 1px solid #8c3a36; border-radius: 4px; }"
            "QLabel { color: #f6c9c6; }"
        )
        self.setStyleSheet(dark if is_dark() else light)

    def show_error(self, exc: BaseException, *log_paths: str | Path | None) -> None:
        """`log_paths` are fallbacks after the error's own log: the first that exists gets "Show log"."""
        message, hint = describe(exc)
        candidates = (exc.log_path, *log_paths) if isinstance(exc, PymachineError) else log_paths
        path = next((p for p in candidates if p and Path(p).is_file()), None)
        self.message.setText(f"<b>Error:</b> {_escape(message)}")
        self.hint.setText(f"<b>Hint:</b> {_escape(hint)}" if hint else "")
        self.hint.setVisible(bool(hint))
        self.log_path = str(path) if path else None
        self.show_log.setVisible(self.log_path is not None)
        self._style()  # the theme may have changed since
        self.show()

    def _open_log(self) -> None:
        if self.log_path:
            self.dialog = LogDialog(self.log_path, self)
            self.dialog.show()


def describe(exc: BaseException) -> tuple[str, str]:
    """(message, hint) for a person: the façade's own for a PymachineError, else the cause in words — never
    an exception's repr such as `ChannelException(2, 'Connect failed')`."""
    if isinstance(exc, PymachineError):
        return exc.message, exc.hint
    return plain_reason(exc), ""


class ElidedLabel(QLabel):
    """One line that ends in "…" where the window is too narrow for it, the whole text in its tooltip: a
    plain QLabel squeezed by its row's buttons was cut mid-word ("Containers on 'appux-de")."""

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), self.fontMetrics().horizontalAdvance("Mmm…")), hint.height())

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(rect, int(self.alignment()), text)


def title_label() -> QLabel:
    """A bold heading. Bold by font, not a style sheet: a styled label keeps the palette it was polished
    with and stays dark text on a dark window after the theme changes."""
    label = ElidedLabel()
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label


def empty_state(text: str) -> QLabel:
    label = QLabel(text, alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True)
    label.setStyleSheet("color: palette(mid); font-size: 15px; padding: 40px;")
    label.setTextInteractionFlags(
        Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.LinksAccessibleByMouse
    )
    return label


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")


def action_buttons(
    owner: QWidget,
    bar: QHBoxLayout,
    prefix: str,
    actions: tuple[tuple[str, str, str], ...],
    act: Callable[[str], None],
    tooltip: str = "{text} ({key})",
) -> dict[str, QPushButton]:
    """One button per (verb, label, shortcut) in `bar`, each calling `act(verb)` from a click or its shortcut
    (active while focus is inside `owner`); buttons are named `<prefix>_<verb>` for tests."""
    buttons: dict[str, QPushButton] = {}
    for verb, text, key in actions:
        button = QPushButton(text)
        button.setObjectName(f"{prefix}_{verb}")
        button.setToolTip(tooltip.format(text=text.replace("&", ""), key=key))
        button.clicked.connect(lambda _c=False, v=verb: act(v))
        shortcut_context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        QShortcut(QKeySequence(key), owner, lambda v=verb: act(v), context=shortcut_context)
        bar.addWidget(button)
        buttons[verb] = button
    return buttons
