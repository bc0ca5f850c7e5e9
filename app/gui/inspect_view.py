"""A container's (or image's) inspect JSON, pretty-printed, with a find box."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QVBoxLayout, QWidget

from .common import mono_font


class InspectView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setFont(mono_font())
        self.text.setPlaceholderText("Select a container to see its inspect JSON.")
        self.find = QLineEdit(placeholderText="Find (Enter for next)")
        # wide enough for its own hint: a narrow box showed "Find (Enter for ne..."
        hint = self.find.fontMetrics().horizontalAdvance(self.find.placeholderText())
        self.find.setMinimumWidth(hint + 4 * self.find.fontMetrics().averageCharWidth())
        self.find.returnPressed.connect(self.find_next)
        self.title = QLabel()
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.find)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.text)
        self.data: Any = None

    def show_json(self, title: str, data: Any) -> None:
        self.data = data
        self.title.setText(title)
        self.text.setPlainText(json.dumps(data, indent=2, sort_keys=True))

    def find_next(self) -> bool:
        needle = self.find.text()
        if not needle:
            return False
        if self.text.find(needle):
            return True
        self.text.moveCursor(self.text.textCursor().MoveOperation.Start)  # wrap around
        return self.text.find(needle, QTextDocument.FindFlag(0))

    def clear(self) -> None:
        self.data = None
        self.title.setText("")
        self.text.clear()
