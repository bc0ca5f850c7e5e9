"""Progress on the terminal: the typed values of `hostvm.progress` drawn with rich (per-layer bars for a pull,
byte bars for load/save, spinners for stages, the current step of a long build) when stdout and stderr are
terminals; plain lines otherwise, so that logs and pipes stay readable. NO_COLOR is honoured.

Everything goes to stderr: stdout carries only the command's result (ids, tables, JSON)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from pymachine.hostvm.progress import BuildOutput, ByteProgress, LayerProgress, StageProgress, StepNote
from pymachine.hostvm.units import human_size


def interactive(out: TextIO | None = None, err: TextIO | None = None) -> bool:
    # the streams of the moment (not those of the import: a test's captured stream is closed by now)
    out, err = out or sys.stdout, err or sys.stderr
    return out.isatty() and err.isatty() and os.environ.get("TERM") != "dumb"


class Plain:
    """One line per change that matters: a stage's start and end, a layer's new status (not every byte), a
    transfer every tenth of the way."""

    def __init__(self, err: TextIO | None = None) -> None:
        self._err = err  # None: whatever sys.stderr is when a line is written
        self.layer_status: dict[str, str] = {}
        self.note_at: dict[str, float] = {}  # a step → when its last note was printed
        self.byte_marks: dict[str, int] = {}

    def __call__(self, event: Any) -> None:
        if isinstance(event, LayerProgress):
            if self.layer_status.get(event.layer) == event.status:
                return
            self.layer_status[event.layer] = event.status
            self._line(f"{event.layer}: {event.status}")
        elif isinstance(event, ByteProgress):
            mark = int(10 * event.current / event.total) if event.total else event.current >> 24
            key = f"{event.what} {event.name}"
            if self.byte_marks.get(key) == mark:
                return
            self.byte_marks[key] = mark
            self._line(str(event))
        elif isinstance(event, StepNote):
            now = time.monotonic()  # hundreds of packages a minute: one line a second is enough in a log
            if now - self.note_at.get(event.step, 0.0) >= 1.0:
                self.note_at[event.step] = now
                self._line(str(event))
        else:
            self._line(str(event))

    def _line(self, text: str) -> None:
        print(text, file=self._err or sys.stderr, flush=True)

    def close(self) -> None:
        pass


class Live:
    """rich's live display: one task per layer, transfer or stage, notes printed above it."""

    def __init__(self, err: TextIO = sys.stderr) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(file=err, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✔[/]" if not self.console.no_color else "✔"),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[size]}"),  # hostvm.units' sizes, as docker's pull shows them
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            redirect_stdout=False,  # stdout is the verb's result (a build's output, ids), never the display's
            redirect_stderr=False,
        )
        self.tasks: dict[str, Any] = {}
        self.totals: dict[str, int] = {}  # layer → its size, once the engine said it
        self.started = False

    def _task(self, key: str, description: str, total: float | None) -> Any:
        if not self.started:
            self.progress.start()
            self.started = True
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=total, size="")
        return self.tasks[key]

    def __call__(self, event: Any) -> None:
        if isinstance(event, LayerProgress):
            if event.total:
                self.totals[event.layer] = event.total
            total = self.totals.get(event.layer, 0)
            done = event.finished
            current = total if done else event.current
            task = self._task(f"layer {event.layer}", event.layer, total or None)
            self.progress.update(
                task,
                description=f"{event.layer}: {event.status}",
                total=total or (1 if done else None),
                completed=current if total else (1 if done else 0),
                size=f"{human_size(current)}/{human_size(total)}" if total else "",
            )
        elif isinstance(event, ByteProgress):
            task = self._task(f"{event.what} {event.name}", f"{event.what} {event.name}", event.total or None)
            of = f"/{human_size(event.total)}" if event.total else ""
            self.progress.update(
                task, completed=event.current, total=event.total or None, size=human_size(event.current) + of
            )
        elif isinstance(event, StageProgress):
            key = f"{event.source} {event.step}"
            task = self._task(key, event.name, 1)
            text = f"{event.source} {event.step}/{event.total}: {event.name}"
            if event.state == "running":
                self.progress.update(task, description=text)
            else:
                took = f" ({event.seconds:.1f} s)" if event.seconds is not None else ""
                self.progress.update(
                    task, description=f"{text}: {'ok' if event.state == 'done' else 'FAILED'}{took}"
                )
                self.progress.update(task, completed=1 if event.state == "done" else 0)
                self.progress.stop_task(task)
        elif isinstance(event, StepNote):
            task = self._task(f"step {event.step}", event.step, None)
            self.progress.update(task, description=f"{event.step}: {event.detail}")
        elif isinstance(event, BuildOutput):
            self.console.print(str(event), markup=False)
        else:
            self.console.print(str(event), markup=False)

    def close(self) -> None:
        if self.started:
            self.progress.stop()  # the last frame stays on the screen, as docker's pull leaves it
            self.started = False


class Renderer:
    """The progress callback a verb hands to `hostvm`; `with Renderer() as say:` closes the display."""

    def __init__(self, live: bool | None = None, err: TextIO | None = None) -> None:
        use_live = interactive() if live is None else live
        self.impl: Plain | Live = Live(err or sys.stderr) if use_live else Plain(err)
        self.since = time.monotonic()

    def __call__(self, event: Any) -> None:
        self.impl(event)

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.impl.close()


_current: Renderer | None = None


def current() -> Renderer:
    """The one renderer of this command: every progress callback of a verb goes through it, so that there is
    one live display at a time (rich allows no more). `finish()` ends it before the verb prints its result."""
    global _current
    if _current is None:
        _current = Renderer()
    return _current


def progress(event: Any) -> None:
    """The callback verbs hand to `hostvm`."""
    current()(event)


def quiet(_event: Any) -> None:
    pass


def finish() -> None:
    global _current
    if _current is not None:
        _current.impl.close()
        _current = None
