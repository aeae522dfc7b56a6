"""DataLoader workers that never outlive the training process.

torch's workers watch their parent by comparing ``os.getppid()`` with the parent pid they read when they start. A
training process killed (SIGKILL, the OOM killer) while a worker is still starting leaves that worker reading init
as its parent from the first: its watch never fires and it waits for work forever, holding its memory. So on Linux
every worker asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), then checks that the process
that created it is still its parent — it may have died before the request was made.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class DieWithParent:
    """A DataLoader ``worker_init_fn``, made in the training process (a class, so that it pickles for any worker
    start method): the worker ends with the process that created it."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, worker_id: int) -> None:
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            except (OSError, AttributeError):  # no prctl in this C library: torch's own watch remains
                pass
        if os.getppid() != self.parent:  # the training process died before the request: nobody to work for
            os._exit(0)
