"""Tables every panel uses: rows keyed by an id in a QAbstractTableModel, sorted and searched through a
QSortFilterProxyModel, shown by a QTableView with a search box.

A refresh hands `set_rows` the new rows: rows whose key is gone are removed, kept rows are updated in place
(dataChanged) and new rows are appended — the view keeps its selection, scroll position and column widths,
and no widget is rebuilt. Cells elide; the proxy sorts by each column's sort key (sizes as bytes, not text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

KEY_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
LINKS_ROLE = Qt.ItemDataRole.UserRole + 3  # [(label, url)] for a links column

# status dot colours: one meaning across machines and containers
DOT_COLOURS = {"ok": "#2e9d4f", "busy": "#e0a100", "off": "#9aa0a6", "bad": "#d93025"}


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[Any], str]
    sort: Callable[[Any], Any] | None = None  # sort key (defaults to the text)
    width: int = 120  # initial width in pixels; people resize, refreshes never do
    dot: Callable[[Any], str] | None = None  # a DOT_COLOURS key: a status dot before the text
    links: Callable[[Any], list[tuple[str, str]]] | None = None  # (label, url) drawn as links
    tooltip: Callable[[Any], str] | None = None


_DOTS: dict[str, QIcon] = {}


def dot_icon(kind: str) -> QIcon:
    if kind not in _DOTS:
        pix = QPixmap(12, 12)
        pix.fill(Qt.GlobalColor.transparent)
        p = QPainter(pix)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(DOT_COLOURS.get(kind, DOT_COLOURS["off"])))
        p.drawEllipse(1, 1, 10, 10)
        p.end()
        _DOTS[kind] = QIcon(pix)
    return _DOTS[kind]


class RowModel(QAbstractTableModel):
    def __init__(self, columns: Sequence[Column], key: Callable[[Any], str], parent: Any = None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.key = key
        self._rows: list[Any] = []
        self._keys: list[str] = []

    # -- Qt model API -------------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row, col = self._rows[index.row()], self.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return col.text(row)
        if role == SORT_ROLE:
            return col.sort(row) if col.sort else col.text(row)
        if role == KEY_ROLE:
            return self._keys[index.row()]
        if role == Qt.ItemDataRole.DecorationRole and col.dot:
            return dot_icon(col.dot(row))
        if role == LINKS_ROLE and col.links:
            return col.links(row)
        if role == Qt.ItemDataRole.ToolTipRole:
            return col.tooltip(row) if col.tooltip else col.text(row)  # the full text of an elided cell
        return None

    # -- rows ---------------------------------------------------------------------------------------------
    def set_rows(self, rows: Sequence[Any]) -> None:
        """Replace the rows, keeping each kept key's position (see the module docstring)."""
        new = {self.key(r): r for r in rows}
        for i in reversed(range(len(self._keys))):
            if self._keys[i] not in new:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self._rows[i], self._keys[i]
                self.endRemoveRows()
        for i, k in enumerate(self._keys):
            old, self._rows[i] = self._rows[i], new[k]
            if any(c.text(old) != c.text(new[k]) for c in self.columns) or old != new[k]:
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.columns) - 1))
        added = [k for k in new if k not in set(self._keys)]
        if added:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(added) - 1)
            for k in added:
                self._keys.append(k)
                self._rows.append(new[k])
            self.endInsertRows()

    def rows(self) -> list[Any]:
        return list(self._rows)

    def row_of(self, key: str) -> int:
        return self._keys.index(key) if key in self._keys else -1

    def get(self, key: str) -> Any:
        i = self.row_of(key)
        return self._rows[i] if i >= 0 else None


class SearchProxy(QSortFilterProxyModel):
    """Case-insensitive search over every column; sorting by each column's sort key."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setDynamicSortFilter(True)

    def lessThan(
        self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex
    ) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return bool(a < b)
        except TypeError:  # mixed kinds (a number and an empty cell): order by text
            return str(a) < str(b)


class LinkDelegate(QStyledItemDelegate):
    """Draws a cell's (label, url) pairs as links; a click on one emits `clicked(url)`."""

    clicked = Signal(str)
    SEP = "   "

    def _spans(
        self, option: QStyleOptionViewItem, links: list[tuple[str, str]]
    ) -> list[tuple[int, int, str]]:
        fm = option.fontMetrics
        x, out = option.rect.x() + 4, []
        for label, url in links:
            w = fm.horizontalAdvance(label)
            out.append((x, x + w, url))
            x += w + fm.horizontalAdvance(self.SEP)
        return out

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:  # type: ignore[override]
        links = index.data(LINKS_ROLE) or []
        if not links:
            super().paint(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        style = opt.widget.style() if opt.widget else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        painter.save()
        font = QFont(option.font)
        font.setUnderline(True)
        painter.setFont(font)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        colour = option.palette.highlightedText() if selected else option.palette.link()
        painter.setPen(colour.color())
        rect = option.rect.adjusted(4, 0, -4, 0)
        text = self.SEP.join(label for label, _url in links)
        elided = option.fontMetrics.elidedText(text, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), elided)
        painter.restore()

    def editorEvent(
        self, event: QEvent, model: Any, option: QStyleOptionViewItem, index: QModelIndex
    ) -> bool:  # type: ignore[override]
        links = index.data(LINKS_ROLE) or []
        if links and event.type() == QEvent.Type.MouseButtonRelease:
            x = int(event.position().x())  # type: ignore[attr-defined]
            for left, right, url in self._spans(option, links):
                if left <= x <= right:
                    self.clicked.emit(url)
                    return True
        return super().editorEvent(event, model, option, index)


class DataTable(QWidget):
    """A search box over a sortable, filterable table of a RowModel; `current_changed(key)` on selection."""

    current_changed = Signal(str)
    link_clicked = Signal(str)
    menu_requested = Signal(QPoint)  # a right-click on a row (selected first), at this global position

    def __init__(
        self,
        columns: Sequence[Column],
        key: Callable[[Any], str],
        search_placeholder: str = "Search",
        parent: QWidget | None = None,
        multi: bool = False,
    ) -> None:
        super().__init__(parent)
        self.model = RowModel(columns, key, self)
        self.proxy = SearchProxy(self)
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit(placeholderText=search_placeholder, clearButtonEnabled=True)
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # multi: Ctrl/Shift+click and Ctrl+A select several rows for the bulk verbs
        mode = QAbstractItemView.SelectionMode
        self.view.setSelectionMode(mode.ExtendedSelection if multi else mode.SingleSelection)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu_at)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setWordWrap(False)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().hide()
        self.view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setHighlightSections(False)
        for i, c in enumerate(columns):
            header.resizeSection(i, c.width)
        self.delegate = LinkDelegate(self.view)
        self.delegate.clicked.connect(self.link_clicked)
        for i, c in enumerate(columns):
            if c.links:
                self.view.setItemDelegateForColumn(i, self.delegate)
        self._last_key = ""
        self.view.selectionModel().selectionChanged.connect(lambda *_a: self._announce())
        self.view.selectionModel().currentChanged.connect(lambda *_a: self._announce())
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.search)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)

    def set_rows(self, rows: Sequence[Any]) -> None:
        self.model.set_rows(rows)
        self._announce()  # the selected row went away: say so (the detail pane clears)

    def _announce(self) -> None:
        """`current_changed` only when the selected key really changed (rows moving under it do not count)."""
        key = self.current_key()
        if key != self._last_key:
            self._last_key = key
            self.current_changed.emit(key)

    def rows(self) -> list[Any]:
        return self.model.rows()

    def visible_keys(self) -> list[str]:
        """Keys in the order shown (sorted, filtered)."""
        return [self.proxy.index(r, 0).data(KEY_ROLE) for r in range(self.proxy.rowCount())]

    def current_key(self) -> str:
        """The row the detail pane shows: the focused row when it is selected, else the first selected."""
        sel = self.view.selectionModel().selectedRows()
        if not sel:
            return ""
        focus = self.view.currentIndex()
        if focus.isValid() and self.view.selectionModel().isRowSelected(focus.row(), QModelIndex()):
            return str(self.proxy.index(focus.row(), 0).data(KEY_ROLE))
        return str(sel[0].data(KEY_ROLE))

    def selected_keys(self) -> list[str]:
        """Every selected row's key, in the order shown."""
        rows = sorted(i.row() for i in self.view.selectionModel().selectedRows())
        return [self.proxy.index(r, 0).data(KEY_ROLE) for r in rows]

    def selected(self) -> list[Any]:
        return [self.model.get(k) for k in self.selected_keys()]

    def select_keys(self, keys: Sequence[str]) -> int:
        """Select these rows (those the search shows); how many were selected."""
        sel = QItemSelection()
        for key in keys:
            i = self.model.row_of(key)
            index = self.proxy.mapFromSource(self.model.index(i, 0)) if i >= 0 else QModelIndex()
            if index.isValid():
                sel.select(index, index)
        flags = QItemSelectionModel.SelectionFlag
        self.view.selectionModel().select(sel, flags.ClearAndSelect | flags.Rows)
        return len(self.selected_keys())

    def _menu_at(self, pos: QPoint) -> None:
        """Right-click: a row outside the selection becomes the selection (as file managers do)."""
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        flags = QItemSelectionModel.SelectionFlag
        keep = self.view.selectionModel().isRowSelected(index.row(), QModelIndex())
        self.view.selectionModel().setCurrentIndex(
            index, flags.NoUpdate if keep else flags.ClearAndSelect | flags.Rows
        )
        self.menu_requested.emit(self.view.viewport().mapToGlobal(pos))

    def current(self) -> Any:
        return self.model.get(self.current_key()) if self.current_key() else None

    def select_key(self, key: str) -> bool:
        i = self.model.row_of(key)
        if i < 0:
            return False
        index = self.proxy.mapFromSource(self.model.index(i, 0))
        if not index.isValid():  # hidden by the search
            return False
        # not selectRow: in a multi-select table that follows the keyboard's modifiers (Ctrl held toggles)
        flags = QItemSelectionModel.SelectionFlag
        self.view.selectionModel().setCurrentIndex(index, flags.ClearAndSelect | flags.Rows)
        self.view.scrollTo(index)
        return True

    def column(self, title: str) -> int:
        return [c.title for c in self.model.columns].index(title)

    def cell(self, key: str, column: int | str) -> str:
        column = self.column(column) if isinstance(column, str) else column
        i = self.model.row_of(key)
        return self.model.index(i, column).data() if i >= 0 else ""

    def cell_links(self, key: str, column: int | str) -> list[tuple[str, str]]:
        column = self.column(column) if isinstance(column, str) else column
        i = self.model.row_of(key)
        return (self.model.index(i, column).data(LINKS_ROLE) or []) if i >= 0 else []
