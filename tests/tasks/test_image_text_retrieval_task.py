"""Image–text retrieval: recall@K both ways, the user's caption files held out by image, a contrastive step that
learns, zero-shot labels and text ranking at prediction time, the report view, and the MiniLM text tower."""

import numpy as np
import pytest
import torch
from PIL import Image

from modelforge.core.errors import ConfigError, DataError
from modelforge.tasks.multimodal.image_text_retrieval import ImageTextRetrieval, ensemble_prompts
from modelforge.tasks.multimodal.retrieval_metrics import recall_at_k
from modelforge.tasks.recipes import load_recipe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
TINY_MODEL = {"name": "clip_dual_encoder", "dim": 32, "num_layers": 1, "num_heads": 2, "mlp_hidden": 64,
              "dropout": 0.0, "embed_dim": 16, "image_widths": [8, 16]}


def test_recall_counts_ranks_in_both_directions():
    images = torch.eye(3)
    # captions 0,1 belong to image 0, caption 2 to image 1, caption 3 to image 2; caption 3 points at image 0
    texts = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0.8, 0, 0.6]])
    owner = torch.tensor([0, 0, 1, 2])
    got = recall_at_k(images, texts, owner, ks=(1, 2))
    assert got["t2i_r@1"] == pytest.approx(0.75)  # caption 3 ranks image 0 first
    assert got["t2i_r@2"] == 1.0
    # image 2's only caption scores 0.6, below captions 0 (0) … : its best own caption is ranked first among texts
    assert got["i2t_r@1"] == 1.0
    assert got["mean_recall"] == pytest.approx((0.75 + 1 + 1 + 1) / 4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models gain nothing from intra-op threads, and on a shared CPU spinning threads make them far slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory):
    """15 plain pictures of three colours, two captions each, with noise so no two are identical."""
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for name, rgb in COLOURS.items():
        for i in range(5):
            pixels = np.clip(np.asarray(rgb) + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{name}{i}.png")
            rows += [f"{name}{i}.png,a {name} picture", f"{name}{i}.png,{name}"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


def _task(root, **data):
    raw = {"name": "r", "task": "image_text_retrieval",
           "data": {"source": "files", "path": str(root), "image_size": 16, "tokenizer": {"kind": "word"},
                    "max_length": 8, "val_fraction": 0.0, "test_fraction": 0.2, **data},
           "model": TINY_MODEL, "train": {"batch_size": 6}}
    return ImageTextRetrieval(load_recipe(raw))


def _train(task, splits, steps=60):
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = splits.train.get_batch(range(len(splits.train)))
    first = None
    for _ in range(steps):
        loss = task.training_step(model, train).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), first, loss.item()


def test_files_are_split_by_image_and_a_trained_model_answers_labels_and_queries(colour_files):
    task = _task(colour_files)
    splits = task.datasets()
    assert len(splits.train) + len(splits.test) == 15 and splits.val is None
    assert f"30 captions of 15 images in {colour_files.name}/captions.csv" in splits.summary["found"]
    assert "split off captions" in splits.summary["found"] and "by hash" in splits.summary["found"]
    images, ids, lengths, counts = splits.train.get_batch([0])
    assert images.shape == (1, 3, 16, 16) and images.dtype == torch.uint8 and counts.tolist() == [2]
    model, first, last = _train(task, splits)
    assert last < 0.5 * first, f"contrastive loss {first:.3f} → {last:.3f}"
    with torch.no_grad():
        metrics = task.evaluate(model, [splits.train.get_batch(range(len(splits.train)))])
    assert metrics["t2i_r@5"] > 0.5 and set(metrics) >= {"loss", "i2t_r@1", "t2i_r@10", "mean_recall"}

    files = [str(colour_files / f"{name}0.png") for name in COLOURS]
    with torch.no_grad():
        zero_shot = task.postprocess(task.forward(model, task.preprocess(files), labels=["red", "green", "blue"]))
    assert [r["label"] for r in zero_shot] == ["red", "green", "blue"]
    assert sum(t["probability"] for t in zero_shot[0]["top"]) == pytest.approx(1, abs=1e-4)
    with torch.no_grad():
        ranked = task.postprocess(task.forward(model, task.preprocess(files), query="a green picture"))
    assert sorted(r["rank"] for r in ranked) == [1, 2, 3] and ranked[1]["rank"] == 1
    with torch.no_grad():
        plain = task.postprocess(task.forward(model, task.preprocess(files[:1])))
    assert np.linalg.norm(plain[0]["embedding"]) == pytest.approx(1, abs=1e-4)


def test_prompt_ensembling_scores_each_label_by_the_normalised_mean_of_its_prompts(colour_files):
    task = _task(colour_files)
    task.datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    labels, templates = ["red", "green", "blue"], ["a {} picture", "{}"]
    with torch.no_grad():
        got = task.label_embeddings(model, labels, templates)
        by_template = [task.encode_texts(model, [t.replace("{}", label) for label in labels]) for t in templates]
        images = task.preprocess([str(colour_files / f"{name}1.png") for name in COLOURS])
        answers = task.postprocess(task.forward(model, images, labels=labels, templates=templates))
        logits = model.scale() * model.encode_image(task._pixels(images)) @ got.T
    mean = (by_template[0] + by_template[1]) / 2
    assert torch.allclose(got, mean / mean.norm(dim=-1, keepdim=True), atol=1e-6)
    assert not torch.allclose(got, by_template[0], atol=1e-3)  # the second template changed the labels' embeddings
    assert [a["label"] for a in answers] == [labels[i] for i in logits.argmax(1).tolist()]
    one = torch.nn.functional.normalize(torch.tensor([[[3.0, 4.0]], [[0.0, 1.0]]]), dim=-1)
    assert torch.allclose(ensemble_prompts(one), torch.tensor([[0.6, 1.8]]) / (0.6**2 + 1.8**2) ** 0.5)


def test_bad_prediction_options_and_inputs_are_one_line_errors(colour_files, tmp_path):
    task = _task(colour_files)
    splits = task.datasets()
    model = task.build_model().eval()
    batch = task.preprocess([str(colour_files / "red0.png")])
    for options, message in [({"labels": ["a", "b"], "query": "c"}, "not both"), ({"labels": []}, "1 to 64"),
                             ({"labels": ["a", " "]}, "non-empty"), ({"labels": ["a", "a"]}, "differ"),
                             ({"query": ""}, "non-empty"), ({"query": "c", "templates": ["a {}"]}, "give labels"),
                             ({"labels": ["a"], "templates": ["a"]}, "hold {} once"),
                             ({"labels": ["a"], "templates": ["{} {}"]}, "hold {} once"),
                             ({"labels": ["a"], "templates": []}, "1 to 16"),
                             ({"labels": ["a"], "templates": ["a {}", "a {}"]}, "differ")]:
        with pytest.raises(ConfigError, match=message):
            task.forward(model, batch, **options)
    with pytest.raises(DataError, match="no such image file"):
        task.preprocess([str(tmp_path / "missing.png")])
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable image"):
        task.preprocess([str(tmp_path / "bad.png")])
    report = task.report_samples(model, splits, count=3)
    assert report.png.startswith(b"\x89PNG") and "rank of its image" in report.html


def test_a_file_source_too_small_to_hold_out_says_so(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "captions.csv").write_text("image,caption\na.png,dark\n")
    with pytest.raises(DataError, match="leaves it empty"):
        _task(tmp_path, test_fraction=0.5).datasets()


def test_the_minilm_text_tower_starts_from_the_checkpoint():
    from modelforge.data.text_encoding import minilm_dir
    from modelforge.models.hf import load_hf_bert

    raw = {"name": "r", "task": "image_text_retrieval",
           "data": {"source": "files", "path": "unused", "init_text_encoder": "minilm"},
           "model": {"name": "clip_dual_encoder", "image_size": 64}}
    task = ImageTextRetrieval(load_recipe(raw))
    task.state_dict_ = {"vocab_size": 30522, "image_size": 64}
    model = task.build_model()
    reference = load_hf_bert(minilm_dir()).state_dict()
    for key in ("embeddings.word.weight", "blocks.5.attn.qkv.weight"):
        if key in reference:
            assert torch.equal(model.text.state_dict()[key], reference[key])
    assert all(torch.equal(model.text.state_dict()[k], v) for k, v in reference.items() if k in model.text.state_dict())
    raw["model"]["mlp_hidden"] = 768
    task = ImageTextRetrieval(load_recipe(raw))
    task.state_dict_ = {"vocab_size": 30522, "image_size": 64}
    with pytest.raises(ConfigError, match="does not fit the text tower"):
        task.build_model()


def test_a_frozen_minilm_tower_gives_the_features_training_uses(colour_files):
    raw = {"name": "r", "task": "image_text_retrieval", "model": {"name": "clip_dual_encoder", "image_widths": [4, 8]},
           "data": {"source": "files", "path": str(colour_files), "image_size": 16, "test_fraction": 0.0,
                    "val_fraction": 0.0, "init_text_encoder": "minilm", "text_tower": "frozen"}}
    task = ImageTextRetrieval(load_recipe(raw))
    splits = task.datasets()
    images, ids, lengths, counts, features = splits.train.get_batch(range(4))
    model = task.build_model().eval()
    assert not any(p.requires_grad for p in model.text.parameters())
    with torch.no_grad():
        direct = model.text_features(*task._text_inputs(ids[:, 0], lengths[:, 0]))
    torch.testing.assert_close(features[:, 0], direct, atol=1e-5, rtol=1e-4)  # served text meets trained features
    model.train()
    task.training_step(model, (images, ids, lengths, counts, features)).loss.backward()
    assert model.text_proj.weight.grad is not None and model.image.proj.weight.grad is not None
    with pytest.raises(ConfigError, match="set data.init_text_encoder"):
        _task(colour_files, text_tower="frozen").datasets()
    adapted = load_recipe({**raw, "adapter": {"r": 4}})
    with pytest.raises(ConfigError, match="drop one"):
        ImageTextRetrieval(adapted).datasets()
