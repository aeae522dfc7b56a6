import pytest
import torch

from modelforge.data.boxes import batched_nms, box_area, box_convert, box_iou, clip_boxes, nms, remove_small_boxes


def test_box_convert_hand_values_and_round_trip():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 60.0]])
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[10.0, 20.0, 30.0, 40.0]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[25.0, 40.0, 30.0, 40.0]]
    assert box_convert(torch.tensor([[25.0, 40.0, 30.0, 40.0]]), "cxcywh", "xywh").tolist() == [[10, 20, 30, 40]]
    boxes = torch.rand(50, 4) * 100
    for fmt in ("xywh", "cxcywh"):
        assert torch.allclose(box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy"), boxes, atol=1e-4)
    with pytest.raises(ValueError, match="unknown box format"):
        box_convert(xyxy, "xyxy", "yxyx")
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        box_convert(torch.zeros(3), "xyxy", "xywh")


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 5.0, 9.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 12.0]])
    iou = box_iou(a, b)
    # overlap 1x1 of two 2x2 boxes: 1 / (4 + 4 - 1); identical boxes: 1; disjoint: 0
    expected = torch.tensor(
        [
            [1 / 7, 1.0, 0.0],
            [4 / 16, 4 / 16, 0.0],  # a 2x2 box inside a 4x4 one
            [0.0, 0.0, 0.0],  # a zero-width box overlaps nothing and gives no NaN
        ]
    )
    assert torch.allclose(iou, expected)
    assert box_iou(a, torch.zeros(0, 4)).shape == (3, 0)
    assert box_area(a).tolist() == [4.0, 16.0, 0.0]


def test_nms_hand_computed():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0], [0, 0, 10, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(box0, box1) = 81 / 119 = 0.68; IoU(box3, box0) = 90 / 100 = 0.9; IoU(box3, box1) = 72 / 118 = 0.61
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.65).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_nms_equal_scores_keep_lower_index_first():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert nms(boxes, torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]


def test_nms_properties_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=gen) * 30], dim=1)
    scores = torch.rand(200, generator=gen)
    keep = nms(boxes, scores, 0.4)
    kept_iou = box_iou(boxes[keep], boxes[keep]).fill_diagonal_(0)
    assert kept_iou.max() <= 0.4
    assert (scores[keep][:-1] >= scores[keep][1:]).all()
    removed = torch.tensor(sorted(set(range(200)) - set(keep.tolist())))
    # each removed box overlaps some kept box with a higher score by more than the threshold
    iou = box_iou(boxes[removed], boxes[keep])
    higher = scores[keep][None, :] >= scores[removed][:, None]
    assert ((iou > 0.4) & higher).any(dim=1).all()


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [1.0, 1.0, 11.0, 11.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [0]
    assert batched_nms(-boxes, scores, torch.tensor([2, 1, 0]), 0.5).tolist() == [0, 1, 2]


def test_clip_and_remove_small():
    boxes = torch.tensor([[-5.0, 3.0, 50.0, 80.0], [2.0, 2.0, 3.0, 10.0]])
    assert clip_boxes(boxes, (60, 40)).tolist() == [[0.0, 3.0, 40.0, 60.0], [2.0, 2.0, 3.0, 10.0]]
    assert remove_small_boxes(boxes, 2.0).tolist() == [0]
