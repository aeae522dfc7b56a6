"""The vision tasks that declare ``evaluation_gathers_ranks`` (segmentation, detection, autoencoding, image
generation), evaluated in a real 2-process gloo group (spawned processes): each rank evaluates only its
``eval_share`` of the batches inside ``gathering_ranks()`` and returns the metrics one process gets from every batch —
with the shares eval_share gives and with one rank's share empty — gathering exactly once. Each rank builds the same
small task and seeded untrained model; detection scores an oracle's jittered boxes instead (an untrained detector
scores mAP 0 either way, which would not show whether the gathered images are numbered right)."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modelforge.data.tensors import TensorDataset
from modelforge.tasks.metrics import gathering_ranks
from modelforge.tasks.recipes import load_recipe
from modelforge.training.batches import eval_loader

BATCH = 3


def _segmentation() -> tuple[object, nn.Module, TensorDataset]:
    from modelforge.tasks.vision.segmentation import Segmentation

    state = {"labels": ["background", "road", "car"], "channels": 3, "image_size": [16, 16], "value_max": 255.0,
             "mean": [0.4, 0.5, 0.45], "std": [0.2, 0.25, 0.3]}
    task = Segmentation(load_recipe("road-scenes", ["model.width=4", "model.depth=2"]), state=state)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(11, 3, 16, 16, generator=generator)  # 4 batches: 3 + 3 + 3 + 2
    masks = torch.randint(0, 3, (11, 16, 16), generator=generator).to(torch.uint8)
    return task, _seeded_model(task), TensorDataset(images, masks)


def _autoencoding() -> tuple[object, nn.Module, TensorDataset]:
    from modelforge.tasks.vision.autoencoding import Autoencoding

    raw = {"name": "ae", "task": "autoencoding",
           "data": {"source": "digits", "val_size": 10, "test_size": 100, "noise": "gaussian", "noise_std": 0.2},
           "model": {"name": "conv_autoencoder", "channels": [4, 8], "latent_dim": 6}}
    task = Autoencoding(load_recipe(raw))
    splits = task.datasets()  # the PCA baseline is fitted on its training split
    return task, _seeded_model(task), splits.val


def _image_generation() -> tuple[object, nn.Module, TensorDataset]:
    from modelforge.tasks.vision.image_generation import ImageGeneration

    recipe = load_recipe("mnist-dcgan", ["model.width=4", "model.latent_dim=8", "data.eval_samples=20"])
    task = ImageGeneration(recipe, state={"channels": 1, "image_size": 28})
    images = torch.randint(0, 256, (10, 1, 28, 28), generator=torch.Generator().manual_seed(2)).to(torch.uint8)
    return task, _seeded_model(task), TensorDataset(images)


def _detection() -> tuple[object, nn.Module, object]:
    """Letterboxed 32×32 inputs of 64×48 pictures (scale 0.5, 4 px of padding at the top) with 0–2 objects each, and
    an oracle returning for each image its true boxes jittered by a few pixels, at a score of its own."""
    from modelforge.data.transforms import unletterbox_boxes
    from modelforge.tasks.vision.detection import STRIDE, Detection, DetectionSet
    from modelforge.tasks.vision.detection_targets import encode_targets

    state = {"labels": ["digit", "shape"], "category_ids": [7, 9], "image_size": 32, "mean": [0.0] * 3,
             "std": [1.0] * 3}
    task = Detection(load_recipe("scenes-detector", ["data.image_size=32"]), state=state)
    rng, letterbox, count = np.random.default_rng(3), (0.5, 0.5, 0, 4), 10
    images = torch.zeros(count, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)  # the oracle reads which image it is shown here
    boxes, labels, records, jittered = [], [], [], []
    for i in range(count):
        n = i % 3  # image 0 has no object
        x, y = rng.uniform(0, 16, n), rng.uniform(4, 16, n)
        w, h = rng.uniform(8, 16, n), rng.uniform(6, 12, n)
        xyxy = torch.tensor(np.stack([x, y, x + w, y + h], 1), dtype=torch.float32).reshape(-1, 4)
        boxes.append(xyxy)
        labels.append(torch.tensor(rng.integers(0, 2, n), dtype=torch.long))
        jittered.append(xyxy + torch.tensor(rng.normal(0, 1.5, (n, 4)), dtype=torch.float32))
        truth = [(state["category_ids"][int(c)], [x0, y0, x1 - x0, y1 - y0], (x1 - x0) * (y1 - y0), 0)
                 for (x0, y0, x1, y1), c in zip(unletterbox_boxes(xyxy, letterbox).tolist(), labels[-1].tolist())]
        records.append({"width": 64, "height": 48, "letterbox": letterbox, "gt": truth})
    targets = encode_targets(jittered, labels, 2, (32 // STRIDE, 32 // STRIDE), STRIDE)
    confidence = torch.tensor(rng.uniform(0.3, 0.95, count), dtype=torch.float32).view(-1, 1, 1, 1)
    heat = (targets.heatmap * confidence).clamp(1e-6, 1 - 1e-6)
    outputs = {"heatmap": torch.log(heat / (1 - heat)), "size": targets.size, "offset": targets.offset}
    return task, _Oracle(outputs), DetectionSet(images, boxes, labels, records)


class _Oracle(nn.Module):
    def __init__(self, outputs: dict[str, torch.Tensor]):
        super().__init__()
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shown = (x[:, 0, 0, 0] * 255).round().long()  # the task normalised with mean 0, std 1
        return {key: value[shown] for key, value in self.outputs.items()}


def _seeded_model(task) -> nn.Module:
    torch.manual_seed(0)  # the same weights in every process
    return task.build_model().eval()


CASES = {"segmentation": _segmentation, "detection": _detection, "autoencoding": _autoencoding,
         "image_generation": _image_generation}


def _batches(task, dataset, rank: int = 0, world_size: int = 1) -> list:
    return list(eval_loader(dataset, BATCH, task.collate, 0, False, rank, world_size))


def _rank(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)  # as the parent's reference: the same arithmetic in every process
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        results = {}
        for name, build in CASES.items():
            task, model, dataset = build()
            every = _batches(task, dataset)
            shares = {"even": _batches(task, dataset, rank, world_size), "empty": every if rank == 0 else []}
            for case, mine in shares.items():
                with torch.no_grad(), gathering_ranks() as gather:
                    results[f"{name}/{case}"] = task.evaluate(model, iter(mine))
                results[f"{name}/{case}/gathers"] = gather.gathers
                results[f"{name}/{case}/batches"] = len(mine)
            with torch.no_grad():  # outside gathering_ranks(): this rank's share alone
                results[f"{name}/own"] = task.evaluate(model, iter(shares["even"]))
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(results, fh)
    finally:
        dist.destroy_process_group()


def test_each_rank_evaluates_its_share_and_returns_the_metrics_of_the_whole_split(tmp_path):
    # spawned, not forked: a fork of a process whose OpenMP threads already ran (an earlier test's forward) can hang
    group = mp.start_processes(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False,
                               start_method="spawn")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # one process evaluating every batch, while the ranks start
        whole = {}
        for name, build in CASES.items():
            task, model, dataset = build()
            with torch.no_grad():
                whole[name] = task.evaluate(model, iter(_batches(task, dataset)))
    finally:
        torch.set_num_threads(threads)
        while not group.join():
            pass
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [ranks[r]["segmentation/even/batches"] for r in (0, 1)] == [2, 2]
    assert [ranks[r]["detection/empty/batches"] for r in (0, 1)] == [4, 0]
    for name, expected in whole.items():
        for rank, results in enumerate(ranks):
            for case in ("even", "empty"):
                assert _same(results[f"{name}/{case}"], expected), (name, case, rank)
                assert results[f"{name}/{case}/gathers"] == 1
        assert ranks[0][f"{name}/own"]["loss_d" if name == "image_generation" else "loss"] != pytest.approx(
            expected["loss_d" if name == "image_generation" else "loss"], rel=1e-6), name  # the shares really differ
    assert 0.05 < whole["detection"]["map"] < 0.95 and whole["detection"]["map50"] > whole["detection"]["map"]
    assert {"iou_road", "dice_car"} <= set(whole["segmentation"]) and "noisy_psnr" in whole["autoencoding"]


def _same(found: dict, expected: dict) -> bool:
    if set(found) != set(expected):
        return False
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            if not math.isnan(found[key]):
                return False
        elif found[key] != pytest.approx(value, rel=1e-9):
            return False
    return True
