"""Box operations in plain torch: format conversion, area, pairwise IoU, clipping and (batched) non-maximum suppression.

Boxes are float tensors of shape (N, 4). The canonical format is ``xyxy`` (left, top, right, bottom) in pixel
coordinates with the right/bottom edge exclusive, so a box's width is ``x2 - x1`` (the COCO convention: a box
``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``). ``xywh`` is COCO's format; ``cxcywh`` is centre + size.
"""

from __future__ import annotations

from typing import Literal

import torch

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_boxes(boxes: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")


def box_convert(boxes: torch.Tensor, in_fmt: BoxFormat, out_fmt: BoxFormat) -> torch.Tensor:
    """Convert (N, 4) boxes between ``xyxy``, ``xywh`` and ``cxcywh``; always returns a new tensor."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in _FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; valid: {', '.join(_FORMATS)}")
    _check_boxes(boxes)
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    # (a, b, c, d) is now xyxy
    if out_fmt == "xywh":
        return torch.stack([a, b, c - a, d - b], dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack([(a + c) / 2, (b + d) / 2, c - a, d - b], dim=-1)
    return torch.stack([a, b, c, d], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of (N, 4) xyxy boxes; an inverted box (x2 < x1) has area 0, not a negative one."""
    _check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of xyxy boxes: (N, 4) × (M, 4) → (N, M). Two empty boxes have IoU 0."""
    _check_boxes(boxes1)
    _check_boxes(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    # where the union is 0 both boxes are empty, so the intersection is 0 too: report 0 rather than NaN
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clip xyxy boxes to an image of ``size = (height, width)``."""
    _check_boxes(boxes)
    height, width = size
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=-1)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of xyxy boxes whose width and height are both at least ``min_size``."""
    _check_boxes(boxes)
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.nonzero((wh >= min_size).all(dim=1)).flatten()


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression over xyxy boxes.

    Visits boxes from the highest score down and drops every later box whose IoU with a kept one is strictly
    greater than ``iou_threshold``. Returns the kept indices (int64), ordered by decreasing score; ties keep the
    lower index first, so the result does not depend on the sort's stability. Builds an N×N IoU matrix, so keep N to a
    few thousand (threshold scores / take the top-k first, as detectors do anyway).
    """
    _check_boxes(boxes)
    if scores.ndim != 1 or len(scores) != len(boxes):
        raise ValueError(f"scores must have shape ({len(boxes)},), got {tuple(scores.shape)}")
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS applied independently per category (or per image): boxes with different ``idxs`` never suppress each other.

    Shifts each group's boxes by a multiple of the largest coordinate so groups cannot overlap, then runs one NMS.
    """
    _check_boxes(boxes)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have the shape of scores {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    offsets = idxs.to(boxes.dtype) * span
    return nms(boxes + offsets[:, None], scores, iou_threshold)
