"""What the Containers, Images and Volumes tabs share: the engine client of the machine they show (made on
the GUI thread, handed to workers), their rows, the empty-state sentence, and reading a MachineView."""

from __future__ import annotations

from typing import Any

from .machine_state import MachineView

NO_MACHINE = "No machine selected — create one on the Machines tab (Ctrl+1, then Ctrl+N)."


def as_view(name: str, view: MachineView | bool | None) -> MachineView | None:
    """A bool stands for an engine named on the command line (--engine): running or not."""
    if isinstance(view, bool):
        return MachineView(name, "running" if view else "stopped", "")
    return view


class EngineTab:
    """Mixed into a QWidget that has `machine`, `dc`, `client_factory`, `table` (a DataTable), `empty` (a
    QLabel) and `stack` (a QStackedWidget)."""

    machine: str
    dc: Any
    client_factory: Any
    table: Any
    empty: Any
    stack: Any

    def _empty(self, text: str) -> None:
        self.empty.setText(text)
        self.stack.setCurrentWidget(self.empty)

    def client(self) -> Any:
        if self.dc is None:
            self.dc = self.client_factory(self.machine)
        return self.dc

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.table.rows()
