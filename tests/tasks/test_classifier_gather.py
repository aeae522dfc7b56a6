"""``classifier_evaluation`` inside ``gathering_ranks()`` in a real 2-process gloo group (spawned processes): every
rank returns the metrics of the whole split, equal to one process evaluating every batch — with uneven shares and with
a rank whose share is empty; outside ``gathering_ranks()`` the same group gathers nothing (each rank scores exactly
what it was given), and without a process group ``gathering_ranks()`` changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modelforge.tasks.metrics import across_ranks, classifier_evaluation, gathering_ranks
from modelforge.training.batches import epoch_order, eval_share

ROWS, BATCH, CLASSES = 22, 4, 3  # 6 batches, the last one of 2 rows


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(ROWS, CLASSES, generator=generator)
    labels = torch.randint(0, CLASSES, (ROWS,), generator=generator)
    return [(logits[b], labels[b]) for b in epoch_order(ROWS, BATCH, 0, 0, shuffle=False)]


def _shares(world_size: int) -> list[list[int]]:
    """Batch numbers per rank: eval_share's split (3 + 3), and one that leaves rank 1 with nothing."""
    plan = [torch.tensor([i]) for i in range(len(_batches()))]
    return [[int(b) for b in eval_share(plan, rank, world_size)] for rank in range(world_size)]


def _rank(rank: int, world_size: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=30))
    try:
        batches = _batches()
        results = {}
        for case, shares in (("even", _shares(world_size)), ("empty", [list(range(len(batches))), []])):
            mine = [batches[i] for i in shares[rank]]
            with gathering_ranks() as gather:
                results[case] = classifier_evaluation(iter(mine), CLASSES)
            results[f"{case}_gathers"] = gather.gathers
        results["outside"] = classifier_evaluation([batches[i] for i in _shares(world_size)[rank]], CLASSES)
        with gathering_ranks():  # what other tasks gather: sums as one-row arrays, texts as lists (rank 1's empty)
            sums, texts = across_ranks(np.array([rank + 0.5]), [f"rank {rank}"] * (1 - rank))
        results["joined"] = [sums.tolist(), texts]
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(results, fh)
    finally:
        dist.destroy_process_group()


def test_two_ranks_gather_the_metrics_of_the_whole_split(tmp_path):
    assert _shares(2) == [[0, 1, 2], [3, 4, 5]]
    # spawned, not forked: a fork of a process whose OpenMP threads already ran (an earlier test's forward) can hang
    mp.start_processes(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    whole = classifier_evaluation(_batches(), CLASSES)
    batches = _batches()
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for case in ("even", "empty"):
            assert _same(results[case], whole), (rank, case)
            assert results[f"{case}_gathers"] == 1
        own = classifier_evaluation([batches[i] for i in _shares(2)[rank]], CLASSES)
        assert _same(results["outside"], own) and sum(map(sum, own["confusion_matrix"])) == (12, 10)[rank]
        assert results["outside"]["loss"] != pytest.approx(whole["loss"])  # the shares really differ from the whole
        assert results["joined"] == [[0.5, 1.5], ["rank 0"]]


def _same(found: dict, expected: dict) -> bool:
    floats = {k: v for k, v in expected.items() if k != "confusion_matrix"}
    return (found["confusion_matrix"] == expected["confusion_matrix"]
            and {k: found[k] for k in floats} == pytest.approx(floats, rel=1e-12))


def test_without_a_process_group_gathering_changes_nothing():
    with gathering_ranks() as gather:
        inside = classifier_evaluation(_batches(), CLASSES)
    assert inside == classifier_evaluation(_batches(), CLASSES) and gather.gathers == 0


def test_across_ranks_refuses_what_it_cannot_join_in_one_line():
    from modelforge.tasks.metrics import _joined

    assert _joined([[1], [], [2, 3]]) == [1, 2, 3]
    with pytest.raises(TypeError, match="joins numpy arrays and lists, not dict"):
        _joined([{}, {}])


def test_an_empty_split_is_refused_in_one_line():
    with pytest.raises(ValueError, match="the evaluated split has no rows"):
        classifier_evaluation([], CLASSES)
