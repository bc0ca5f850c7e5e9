"""Run façade calls off the GUI thread and hand results back on it.

`run_task(fn, ...)` runs `fn` on the global QThreadPool; its result, exception and progress messages come back
through a relay QObject that lives on the GUI thread, so callbacks always run there (queued connections).
`EventWatcher` tails every machine's host-agent events file on one thread.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from pymachine.hostvm import paths
from pymachine.hostvm.hostagent import events as evmod

log = logging.getLogger(__name__)
_LIVE: set[Task] = set()  # keeps tasks (and their relays) alive until their result is delivered


def _receiver_alive(callback: Callable[..., Any] | None) -> bool:
    """False when `callback` is a method of a Qt object already deleted (a panel or dialog closed while its
    task ran): its answer is dropped, not delivered into a dead widget's model."""
    owner = getattr(callback, "__self__", None)
    return not isinstance(owner, QObject) or shiboken6.isValid(owner)


class _Relay(QObject):
    progress = Signal(object)  # a str note or a typed value of hostvm.progress
    done = Signal(object)
    failed = Signal(object)

    def __init__(
        self,
        on_done: Callable[[Any], None] | None,
        on_failed: Callable[[BaseException], None] | None,
        on_progress: Callable[[Any], None] | None,
    ) -> None:
        super().__init__()
        self._on_done, self._on_failed, self._on_progress = on_done, on_failed, on_progress
        self.task: Task | None = None
        self.progress.connect(self._progress)
        self.done.connect(self._done)
        self.failed.connect(self._failed)

    @Slot(object)
    def _progress(self, message: Any) -> None:
        if self._on_progress and _receiver_alive(self._on_progress):
            self._on_progress(message)

    @Slot(object)
    def _done(self, result: Any) -> None:
        _LIVE.discard(self.task)  # type: ignore[arg-type]
        if self._on_done and _receiver_alive(self._on_done):
            self._on_done(result)

    @Slot(object)
    def _failed(self, exc: BaseException) -> None:
        _LIVE.discard(self.task)  # type: ignore[arg-type]
        if not _receiver_alive(self._on_failed):
            log.debug("task failure after its receiver was deleted: dropped (%s)", exc)
        elif self._on_failed:
            self._on_failed(exc)
        else:
            log.warning("background task failed: %s", exc)


class Task(QRunnable):
    """One call on a pool thread. When `fn` takes a `progress` argument it gets the relay's emitter."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], relay: _Relay) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args, self.relay = fn, args, relay
        self.finished = False

    def run(self) -> None:
        try:
            kwargs: dict[str, Any] = {}
            try:
                if "progress" in inspect.signature(self.fn).parameters:
                    kwargs["progress"] = self.relay.progress.emit
            except (TypeError, ValueError):
                pass
            result = self.fn(*self.args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the window, none is lost
            log.debug("task %s failed:\n%s", getattr(self.fn, "__name__", self.fn), traceback.format_exc())
            self._deliver(self.relay.failed, exc)
        else:
            self._deliver(self.relay.done, result)
        finally:
            self.finished = True

    @staticmethod
    def _deliver(signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the relay is gone: the application is quitting and nobody waits for this
            log.debug("task answer after the window closed: dropped")


def run_task(
    fn: Callable[..., Any],
    *args: Any,
    on_done: Callable[[Any], None] | None = None,
    on_failed: Callable[[BaseException], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Task:
    relay = _Relay(on_done, on_failed, on_progress)
    task = Task(fn, args, relay)
    relay.task = task
    _LIVE.add(task)
    QThreadPool.globalInstance().start(task)
    return task


def busy() -> bool:
    """True until every task started here has run and had its result delivered (tests wait on this)."""
    return bool(_LIVE)


class StreamThread(QThread):
    """Runs `produce(emit, stopped)` on its own thread: for endless streams (logs, exec output)."""

    chunk = Signal(str)
    ended = Signal(str)  # "" when the stream ended normally, else the error

    def __init__(self, produce: Callable[[Callable[[str], None], Callable[[], bool]], None]) -> None:
        super().__init__()
        self._produce = produce

    def run(self) -> None:
        try:
            self._produce(self.chunk.emit, self.isInterruptionRequested)
        except Exception as exc:  # noqa: BLE001 - a closed stream while stopping is normal
            self.ended.emit("" if self.isInterruptionRequested() else str(exc))
        else:
            self.ended.emit("")


_RETIRED: set[QThread] = set()  # stream threads told to stop, kept alive until they have finished


def retire(thread: QThread) -> None:
    """Stop a StreamThread without waiting on the GUI thread: its signals are cut (nothing it still emits
    reaches a view that now shows something else) and it is kept referenced until it has finished."""
    thread.requestInterruption()
    if isinstance(thread, StreamThread):
        for sig in (thread.chunk, thread.ended):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass  # nothing connected
    if thread.isFinished():
        return
    _RETIRED.add(thread)
    thread.finished.connect(lambda: _RETIRED.discard(thread))


@atexit.register
def _drain_retired() -> None:
    """At exit, let retired threads finish (each ends within a second: a closed socket, a stream's next
    sample): Qt aborts the process when a QThread object is destroyed while its thread runs."""
    for thread in list(_RETIRED):
        thread.wait(5000)


def retired_running() -> int:
    """How many retired threads have not finished yet (tests wait for 0 before the process ends)."""
    return sum(1 for t in _RETIRED if not t.isFinished())


class EventWatcher(QThread):
    """Tails `<machine>/events` of every machine; emits (machine, Event) for lines written after start."""

    event = Signal(str, object)

    def __init__(self, poll: float = 0.5) -> None:
        super().__init__()
        self.poll = poll
        self._offsets: dict[str, int] = {}

    def _scan(self) -> None:
        root = paths.machines_dir()
        names = [d.name for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
        for name in names:
            path: Path = paths.machine(name).events
            if name not in self._offsets:
                self._offsets[name] = evmod.end_offset(path)  # only what happens from now on
                continue
            if evmod.end_offset(path) < self._offsets[name]:
                self._offsets[name] = 0  # rotated
            batch, self._offsets[name] = evmod.read_events(path, self._offsets[name])
            for ev in batch:
                self.event.emit(name, ev)

    def run(self) -> None:
        while not self.isInterruptionRequested():
            try:
                self._scan()
            except OSError as exc:
                log.debug("event scan: %s", exc)
            self.msleep(int(self.poll * 1000))

    def stop(self) -> None:
        self.requestInterruption()
        self.wait(3000)
