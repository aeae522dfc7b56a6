"""DataLoader workers end with the training process: each asks the kernel to kill it when its parent dies, and one
whose creator died before it asked ends at once (torch's own watch would take init for its parent and wait
forever — seen as orphaned workers after a run was SIGKILLed while its evaluation's workers were starting)."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys

import pytest
import torch

from modelforge.training.batches import iterate

PR_GET_PDEATHSIG = 2



class DeathSignal(torch.utils.data.Dataset):
    """Each item: the signal the kernel sends this (worker) process when its parent dies."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        value = ctypes.c_int(-1)
        ctypes.CDLL(None, use_errno=True).prctl(PR_GET_PDEATHSIG, ctypes.byref(value))
        return value.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_every_worker_is_killed_with_its_parent():
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    seen = [b.tolist() for b in iterate(DeathSignal(), batches, torch.utils.data.default_collate, num_workers=2)]
    assert seen == [[signal.SIGKILL] * 2] * 2


def test_a_worker_whose_creator_already_died_ends_at_once():
    code = ("import os\nfrom modelforge.training.worker_lifetime import DieWithParent\n"
            "init = DieWithParent()\ninit.parent = os.getppid() + 1_000_000  # a creator that is not our parent\n"
            "init(0)\nprint('still running')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "still running" not in done.stdout, done.stderr
    kept = subprocess.run([sys.executable, "-c", code.replace(" + 1_000_000", "")], capture_output=True, text=True,
                          timeout=60)
    assert kept.stdout.strip() == "still running"  # its creator alive: nothing happens
