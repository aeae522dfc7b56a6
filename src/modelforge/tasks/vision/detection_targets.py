"""CenterNet training targets, loss and decoding (Zhou et al., 2019, "Objects as Points").

The network (``models/detector.py``) predicts, per stride-4 output cell, class heatmap logits, a box size and a
sub-cell centre offset. Here:

- ``encode_targets`` splats each box centre on its class heatmap as an elliptical Gaussian whose spread follows the
  box's width and height (σ = 0.54·side/6, as in TTFNet), and records size (in output cells) and offset at the
  centre cell;
- ``centernet_loss`` is the paper's penalty-reduced focal loss on the heatmap (α = 2, β = 4) plus L1 losses on size
  (weight 0.1) and offset (weight 1) at object centres, each normalised by the number of objects;
- ``decode`` keeps the heatmap's local maxima (3×3 max-pool: the paper's NMS substitute), takes the top-k, turns them
  into xyxy boxes in input pixels, and then runs a per-class NMS to remove the occasional doubled peak.

Coordinates: a centre at input pixel ``c`` lies in output cell ``floor(c / stride)`` with offset
``c / stride - floor(c / stride)``, so decoding ``(cell + offset) * stride`` gives it back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from modelforge.data.boxes import batched_nms

SIGMA_FACTOR = 0.54 / 6  # TTFNet's Gaussian spread per unit of box side
SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0


@dataclass
class Targets:
    heatmap: torch.Tensor  # (B, C, H, W) in [0, 1], exactly 1 at object centres
    size: torch.Tensor  # (B, 2, H, W) width, height in output cells (only read at centres)
    offset: torch.Tensor  # (B, 2, H, W) x, y sub-cell offsets (only read at centres)
    mask: torch.Tensor  # (B, H, W) bool: the centre cells


def encode_targets(
    boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, out_size: tuple[int, int], stride: int
) -> Targets:
    """Targets for a batch: ``boxes[i]`` (n, 4) xyxy input pixels, ``labels[i]`` (n,) class indices."""
    batch, (height, width) = len(boxes), out_size
    heatmap = np.zeros((batch, num_classes, height, width), dtype=np.float32)
    size = np.zeros((batch, 2, height, width), dtype=np.float32)
    offset = np.zeros((batch, 2, height, width), dtype=np.float32)
    mask = np.zeros((batch, height, width), dtype=bool)
    ys, xs = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]
    for b, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        boxes_np = image_boxes.detach().cpu().numpy().reshape(-1, 4) / stride
        # larger objects first, so a small object's centre is never overwritten by a big neighbour's size
        order = np.argsort(-(boxes_np[:, 2] - boxes_np[:, 0]) * (boxes_np[:, 3] - boxes_np[:, 1]))
        for x1, y1, x2, y2, label in zip(*boxes_np[order].T, image_labels.cpu().numpy()[order], strict=True):
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), width - 1), min(int(cy), height - 1)
            sx, sy = max(SIGMA_FACTOR * w, 0.35), max(SIGMA_FACTOR * h, 0.35)
            # centred on the integer peak cell, so that cell is exactly 1 (the focal loss's positive)
            gauss = np.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
            np.maximum(heatmap[b, label], gauss, out=heatmap[b, label])
            size[b, :, iy, ix] = (w, h)
            offset[b, :, iy, ix] = (cx - ix, cy - iy)
            mask[b, iy, ix] = True
    return Targets(*(torch.from_numpy(a) for a in (heatmap, size, offset, mask)))


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CornerNet/CenterNet), summed and divided by the number of centres."""
    positive = target.eq(1).float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    pos_loss = -(log_p * (1 - p) ** 2 * positive).sum()
    neg_loss = -(log_not_p * p**2 * (1 - target) ** 4 * (1 - positive)).sum()
    return (pos_loss + neg_loss) / positive.sum().clamp(min=1)


def centernet_loss(outputs: dict[str, torch.Tensor], targets: Targets) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (heatmap focal, size L1, offset L1)."""
    device = outputs["heatmap"].device
    heatmap = focal_loss(outputs["heatmap"].float(), targets.heatmap.to(device))
    mask = targets.mask.to(device)
    count = mask.sum().clamp(min=1)

    def l1_at_centres(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = (pred.float() - target.to(device)).abs().sum(dim=1)  # (B, H, W), both coordinates
        return (diff * mask).sum() / count

    size = l1_at_centres(outputs["size"], targets.size)
    offset = l1_at_centres(outputs["offset"], targets.offset)
    total = heatmap + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset
    parts = {"heatmap_loss": heatmap.item(), "size_loss": size.item(), "offset_loss": offset.item()}
    return total, parts


@dataclass
class Detections:
    boxes: torch.Tensor  # (n, 4) xyxy input pixels
    scores: torch.Tensor  # (n,)
    labels: torch.Tensor  # (n,) class indices


def decode(
    outputs: dict[str, torch.Tensor],
    stride: int,
    top_k: int = 100,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
) -> list[Detections]:
    """Per image: the top-k heatmap peaks above ``score_threshold`` as boxes, after per-class NMS."""
    heat = outputs["heatmap"].float().sigmoid()
    batch, classes, height, width = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, flat = peaks.reshape(batch, -1).topk(min(top_k, classes * height * width))
    labels, cell = flat // (height * width), flat % (height * width)
    ys, xs = cell // width, cell % width
    size = outputs["size"].float().reshape(batch, 2, -1)
    offset = outputs["offset"].float().reshape(batch, 2, -1)
    results = []
    for b in range(batch):
        keep = scores[b] >= score_threshold
        idx = cell[b][keep]
        cx = (xs[b][keep].float() + offset[b, 0, idx]) * stride
        cy = (ys[b][keep].float() + offset[b, 1, idx]) * stride
        w, h = size[b, 0, idx].clamp(min=0) * stride, size[b, 1, idx].clamp(min=0) * stride
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        kept_scores, kept_labels = scores[b][keep], labels[b][keep]
        order = batched_nms(boxes, kept_scores, kept_labels, nms_iou)
        results.append(Detections(boxes[order], kept_scores[order], kept_labels[order]))
    return results
