"""The one error type the façade raises, carrying what a person needs to act on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PymachineError(Exception):
    """A failure worth showing to a person: what happened, what to do, where the log is."""

    message: str
    hint: str = ""
    log_path: Path | str | None = None
    exit_code: int = 1

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        if self.log_path:
            lines.append(f"log: {self.log_path}")
        return "\n".join(lines)


class UsageError(PymachineError):
    """Bad input from the user (exit 2, as argparse does)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, None, 2)


class NotFoundError(PymachineError):
    """A named thing (machine, image, container) does not exist."""
