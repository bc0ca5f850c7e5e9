"""`--dist loadgroup` in the order of support/xdist_layout.py, returned by tests/conftest.py's
pytest_xdist_make_scheduler. Imported only under xdist.

pytest-xdist's loadgroup scheduler (3.8, `xdist/scheduler/loadscope.py`) keeps its units in an ordered queue,
by default sorted by test count, most first. It gives each worker the queue's first unit at the start, then
the next one whenever a worker has two tests or fewer left. So the order of the queue decides where a unit
runs: the machine group, first, goes to the first worker, which holds it to its end (hundreds of tests);
the host modules go to the other worker; and the late machine files, last, are taken by whichever worker
runs out of work first. With xdist's own order a late file with many tests would be handed out before the
host modules and two machines would run from the start while the host tiers waited.
"""

from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController

from support.xdist_layout import queue_order


class MachinesFirstScheduling(LoadGroupScheduling):
    # `_assign_work_unit` is xdist's own (3.8), not an API: tests/unit/test_xdist_layout.py drives this class
    # with xdist's algorithm and tests/unit/test_xdist_groups.py runs it in pytest, so a change shows there.
    def _assign_work_unit(self, node: WorkerController) -> None:
        # Every hand-out takes the queue's first unit: order the queue first. xdist fills it once, but puts a
        # crashed worker's units back at its end.
        for scope in queue_order(self.workqueue):
            self.workqueue.move_to_end(scope)
        super()._assign_work_unit(node)
