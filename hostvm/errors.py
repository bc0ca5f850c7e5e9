"""The one error type the façade raises, carrying what a person needs to act on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .progress import StageProgress


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
    """Bad input from the user (exit 2, as argparse does). `problems` lists every (field, problem) when the
    input was a form (machine settings): a front end marks each field without reading the message."""

    def __init__(self, message: str, hint: str = "", problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message, hint, None, 2)
        self.problems = list(problems or [])


class HostKeyMismatch(PymachineError):
    """A machine answered with a host key other than the one pinned at create: refused, never accepted."""

    def __init__(self, machine: str, known_hosts: Path | str) -> None:
        super().__init__(
            f"machine '{machine}' presented a host key that is not the pinned one: refused",
            hint="someone else may answer on its port, or the machine's disk was swapped; "
            f"the pinned key is in {known_hosts}",
        )
        self.machine, self.known_hosts = machine, str(known_hosts)


class StageFailed(PymachineError):
    """A staged operation (start) failed at `stage`; `cause` is the error inside it (HostKeyMismatch, …).

    `hint` is the most specific one: the cause's own where it has one ("the image cache was cleared: …"), else
    the stage's generic `stage_hint` ("the hypervisor did not start the VM: …"). Both joined read as one
    line of two contradicting advices; the stage's stays in `stage_hint` for a front end that wants it."""

    def __init__(
        self, stage: StageProgress, cause: BaseException, stage_hint: str, log_path: Path | str
    ) -> None:
        why = cause.message if isinstance(cause, PymachineError) else _plain(cause)
        own = cause.hint if isinstance(cause, PymachineError) else ""
        super().__init__(
            f"stage {stage.step} of {stage.total}: {stage.name} failed: {why}", own or stage_hint, log_path
        )
        self.stage, self.cause, self.stage_hint = stage, cause, stage_hint


def _plain(cause: BaseException) -> str:
    """An OS error in words with its file ("No such file or directory: /m/dev/ssh_key.pub"), not Python's
    `FileNotFoundError: [Errno 2] …`; anything else keeps its type's name, which is all a bug report has."""
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror + (f": {cause.filename}" if cause.filename else "")
    return f"{type(cause).__name__}: {cause}"


class NotFoundError(PymachineError):
    """A named thing (machine, image, container) does not exist."""
