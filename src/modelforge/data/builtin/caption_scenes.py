"""``scenes-captions``: generated scenes in the style of CLEVR, each with compositional captions of what was drawn.

Everything here is generated, not photographed: each RGB image (64×64 by default) holds two coloured objects — real
MNIST digit glyphs ("0".."9") or shapes (circle, square, triangle), drawn with the shape and digit drawing of the
``scenes-digits`` detection set (``data/builtin/scenes.py``) — on a plain dark background, and its captions say
what is where: "a red square to the left of a blue 7", "a 7 right of a red square". A share of scenes holds three
objects, two of one kind on the same side of the third: "two circles above a yellow 3".

Held-out combinations: of the 5 colours × 13 kinds, the 13 pairs with ``(kind + colour) % 5 == 0`` (one colour per
kind, e.g. a red "0", a white square) are never drawn in train or val scenes; every test scene names at least one
of them. Test captions therefore use only words seen in training, in pairings never seen: a model must compose
colour and kind rather than memorise them. Train scenes use MNIST's training digits, val and test scenes its test
digits (halves), so no glyph is shared between training and evaluation.

On disk (``cache_dir("scenes-captions")/<params-key>/``, built once per parameter set, deterministic in the seed)::

    train/captions.jsonl    one line per caption: {"image", "caption", "objects"}  (objects: kind, colour, box)
    train/images/000000.png ...
    val/...  test/...
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from modelforge.data.builtin.scenes import SHAPES, _digit_alpha, _iou, _shape_alpha, cached_glyph_splits
from modelforge.data.captions import CaptionedImages, read_rgb

SPLITS = ("train", "val", "test")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (70, 110, 255), "yellow": (240, 220, 40),
    "white": (245, 245, 245),
}
KINDS = tuple(str(d) for d in range(10)) + SHAPES
RELATIONS = ("to the left of", "to the right of", "above", "below")
SHORT_RELATIONS = ("left of", "right of", "above", "below")
INVERSE = (1, 0, 3, 2)
SPLIT_ORIGINS = {
    "train": "generated scenes-captions train (seen colour–kind pairs)",
    "val": "generated scenes-captions val (seen colour–kind pairs)",
    "test": "generated scenes-captions test (every scene names an unseen colour–kind pair)",
}
_VERSION = 1  # bump when the rendering or the captions change, so cached datasets are rebuilt


@dataclass(frozen=True)
class CaptionSceneParams:
    num_train: int = 3000
    num_val: int = 300
    num_test: int = 300
    image_size: int = 64
    min_scale: float = 0.26  # object size as a fraction of the image side
    max_scale: float = 0.38
    group_share: float = 0.25  # share of scenes with "two <kind>s" and a third object
    single_share: float = 0.0  # share of train/val scenes holding one object alone: "a white 3", "a 3"
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": _VERSION}, sort_keys=True)
        return f"{self.image_size}px-s{self.seed}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class SceneObject:
    kind: str  # "0".."9", "circle", "square", "triangle"
    colour: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1


def held_out(kind: str, colour: str) -> bool:
    """True for the 13 colour–kind pairs kept out of train and val (one colour per kind)."""
    return (KINDS.index(kind) + list(COLOURS).index(colour)) % len(COLOURS) == 0


def noun(kind: str, article: bool = True) -> str:
    """'a 7', 'an 8', 'a circle' (article) or the plural '7s', 'circles'."""
    if not article:
        return f"{kind}s"
    return f"{'an' if kind == '8' else 'a'} {kind}"


def _relation(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    """Index into RELATIONS of where box ``a`` is from box ``b``; None when the direction is ambiguous (diagonal)."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if max(abs(dx), abs(dy)) < 1.6 * min(abs(dx), abs(dy)) or max(abs(dx), abs(dy)) < 4:
        return None
    if abs(dx) > abs(dy):
        return 0 if dx < 0 else 1
    return 2 if dy < 0 else 3


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark, gently graded grey float32 background with noise: colours stay nameable on it."""
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    slope = rng.uniform(-12, 12, 2).astype(np.float32)
    grey = rng.uniform(25, 75) + ramp[None, :] * slope[0] + ramp[:, None] * slope[1]
    return np.repeat(grey[..., None], 3, axis=2) + rng.standard_normal((size, size, 3), dtype=np.float32) * 5


def _kind_colours(rng: np.random.Generator, unseen: bool) -> tuple[str, str]:
    """A (kind, colour) pair: a held-out one when ``unseen``, else one drawn in train scenes."""
    while True:
        kind, colour = KINDS[rng.integers(len(KINDS))], list(COLOURS)[rng.integers(len(COLOURS))]
        if held_out(kind, colour) == unseen:
            return kind, colour


def _place(rng: np.random.Generator, size: int, sides: list[int], placed_ok) -> list[tuple[int, int, int, int]] | None:
    """Non-overlapping boxes of the given sides that ``placed_ok`` accepts; None after 200 tries."""
    for _attempt in range(200):
        boxes = []
        for side in sides:
            x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
            boxes.append((x, y, x + side, y + side))
        if all(_iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :]) and placed_ok(boxes):
            return boxes
    return None


def _draw(image: np.ndarray, obj: SceneObject, digits: np.ndarray, labels: np.ndarray, rng) -> None:
    side = obj.box[2] - obj.box[0]
    if obj.kind in SHAPES:
        alpha = _shape_alpha(obj.kind, side)
    else:
        pool = np.flatnonzero(labels == int(obj.kind))
        alpha = _digit_alpha(digits[pool[rng.integers(len(pool))]], side)
    _paste(image, alpha, obj.box, obj.colour)


def _paste(image: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int], colour: str) -> None:
    """Blend ``alpha`` (a glyph or shape mask) in ``colour`` into the middle of the square ``box``."""
    side = box[2] - box[0]
    height, width = alpha.shape  # a digit keeps its aspect ratio: centre it in its box
    x = box[0] + (side - width) // 2
    y = box[1] + (side - height) // 2
    region = image[y : y + height, x : x + width]
    region[:] = region * (1 - alpha[..., None]) + np.asarray(COLOURS[colour], np.float32) * alpha[..., None]


def _pair_scene(rng, size: int, sides: list[int], unseen: bool) -> tuple[list[SceneObject], list[str]] | None:
    first = _kind_colours(rng, unseen)
    second = _kind_colours(rng, unseen and rng.random() < 0.3)  # test: at least the first pair is unseen
    boxes = _place(rng, size, sides[:2], lambda b: _relation(b[0], b[1]) is not None)
    if boxes is None or first[0] == second[0]:  # two of one kind are a group scene's caption
        return None
    a, b = SceneObject(first[0], first[1], boxes[0]), SceneObject(second[0], second[1], boxes[1])
    rel = _relation(a.box, b.box)
    full_a, full_b = f"a {a.colour} {a.kind}", f"a {b.colour} {b.kind}"
    captions = [
        f"{full_a} {RELATIONS[rel]} {full_b}",
        f"{full_b} {RELATIONS[INVERSE[rel]]} {full_a}",
        f"{full_a} {SHORT_RELATIONS[rel]} {noun(b.kind)}",
        f"{noun(b.kind)} {RELATIONS[INVERSE[rel]]} {full_a}",
    ]
    return [a, b], captions


def _single_scene(rng, size: int, sides: list[int], unseen: bool) -> tuple[list[SceneObject], list[str]] | None:
    """One object alone, captioned by itself: what a zero-shot label prompt ("a 3", "a white 3") describes."""
    kind, colour = _kind_colours(rng, unseen)
    boxes = _place(rng, size, sides[:1], lambda _boxes: True)
    if boxes is None:
        return None
    return [SceneObject(kind, colour, boxes[0])], [f"a {colour} {kind}", noun(kind)]


def _group_scene(rng, size: int, sides: list[int], unseen: bool) -> tuple[list[SceneObject], list[str]] | None:
    single = _kind_colours(rng, unseen)
    group_kind = KINDS[rng.integers(len(KINDS))]
    group_colours = [_kind_colours_for(rng, group_kind) for _ in range(2)]

    def same_side(boxes) -> bool:
        rels = {_relation(boxes[0], boxes[2]), _relation(boxes[1], boxes[2])}
        return len(rels) == 1 and None not in rels

    boxes = _place(rng, size, sides, same_side)
    if boxes is None or group_kind == single[0]:
        return None
    objects = [SceneObject(group_kind, colour, box) for colour, box in zip(group_colours, boxes[:2])]
    objects.append(SceneObject(single[0], single[1], boxes[2]))
    rel = _relation(boxes[0], boxes[2])
    full = f"a {single[1]} {single[0]}"
    captions = [
        f"two {noun(group_kind, False)} {RELATIONS[rel]} {full}",
        f"{full} {RELATIONS[INVERSE[rel]]} two {noun(group_kind, False)}",
        f"two {noun(group_kind, False)} {SHORT_RELATIONS[rel]} {noun(single[0])}",
    ]
    return objects, captions


def _kind_colours_for(rng: np.random.Generator, kind: str) -> str:
    """A colour for an object whose colour the captions do not name: never a held-out pair, in any split."""
    allowed = [colour for colour in COLOURS if not held_out(kind, colour)]
    return allowed[rng.integers(len(allowed))]


def render_caption_scene(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray,
                         params: CaptionSceneParams, unseen: bool,
                         single_share: float = 0.0) -> tuple[np.ndarray, list[SceneObject], list[str]]:
    """One uint8 (S, S, 3) scene, its objects and its captions; ``unseen``: name a held-out colour–kind pair;
    ``single_share``: the chance of a lone object (no random number is drawn for it at 0, so the other scenes of a
    split without lone objects are the ones drawn before lone objects existed)."""
    size = params.image_size
    while True:  # a layout that leaves a relation ambiguous is drawn again (rare)
        single = single_share > 0 and rng.random() < single_share
        group = not single and rng.random() < params.group_share
        scales = rng.uniform(params.min_scale, params.max_scale, 1 if single else 3 if group else 2)
        sides = [max(8, round(size * scale)) for scale in scales]
        if group:
            sides[1] = sides[0]  # the two of a kind are the same size
        scene = (_single_scene if single else _group_scene if group else _pair_scene)(rng, size, sides, unseen)
        if scene is not None:
            break
    objects, captions = scene
    image = _background(rng, size)
    for obj in objects:
        _draw(image, obj, digits, labels, rng)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects, captions


def _write_split(root: Path, split: str, count: int, digits: np.ndarray, labels: np.ndarray,
                 params: CaptionSceneParams) -> None:
    from PIL import Image

    (root / split / "images").mkdir(parents=True)
    lines = []
    for index in range(count):
        # one generator per image: any image can be regenerated alone, independent of the split sizes
        rng = np.random.default_rng([params.seed, SPLITS.index(split), index])
        # the test split holds no lone objects: its recall measures composition, comparably across versions
        share = 0.0 if split == "test" else params.single_share
        pixels, objects, captions = render_caption_scene(rng, digits, labels, params, split == "test", share)
        name = f"images/{index:06d}.png"
        Image.fromarray(pixels).save(root / split / name)
        described = [{"kind": o.kind, "colour": o.colour, "box": list(o.box)} for o in objects]
        lines += [json.dumps({"image": name, "caption": c, "objects": described}) for c in captions]
    (root / split / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def lone_glyph_scene(rng: np.random.Generator, glyph: np.ndarray, params: CaptionSceneParams | None = None,
                     colour: str = "white") -> np.ndarray:
    """A 28×28 MNIST glyph drawn as a lone-object scene draws a digit (background, size range, placement, colour):
    what a zero-shot benchmark shows a model trained on these scenes."""
    params = params or CaptionSceneParams()
    size = params.image_size
    side = max(8, round(size * rng.uniform(params.min_scale, params.max_scale)))
    x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
    image = _background(rng, size)
    _paste(image, _digit_alpha(glyph, side), (x, y, x + side, y + side), colour)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def caption_scenes_dir(params: CaptionSceneParams | None = None, **overrides) -> Path:
    """Generate (or find in the cache) the set; returns the folder holding ``train/``, ``val/``, ``test/``."""
    params = replace(params or CaptionSceneParams(), **overrides)
    if not 0 < params.min_scale <= params.max_scale <= 0.45:
        raise ValueError(f"need 0 < min_scale <= max_scale <= 0.45, got {params.min_scale}, {params.max_scale}")
    if not 0 <= params.single_share < 1:
        raise ValueError(f"need 0 <= single_share < 1, got {params.single_share}")
    return cached_glyph_splits("scenes-captions", params, "captions.jsonl", _write_split)


def caption_scenes(params: CaptionSceneParams | None = None, **overrides) -> dict[str, CaptionedImages]:
    """The generated splits, images decoded into memory (small), captions grouped per image in file order."""
    root = caption_scenes_dir(params, **overrides)
    out = {}
    for split in SPLITS:
        by_image: dict[str, list[str]] = {}
        for line in (root / split / "captions.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            by_image.setdefault(row["image"], []).append(row["caption"])
        images = [read_rgb(root / split / name) for name in by_image]
        out[split] = CaptionedImages(images, list(by_image.values()), SPLIT_ORIGINS[split], list(by_image))
    return out
