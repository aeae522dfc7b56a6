"""LoRA (training/lora.py) on hf checkpoints and on the toolkit's own encoder: only the adapter and the new head
train; artifacts merged or adapter-only (with the base's sha256); exact resume; DP-SGD on the adapter alone."""

import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from hf_checkpoints import labelled_texts, tiny_bert
from safetensors.torch import load_file, save_file

import modelforge
from modelforge.artifacts.export import export
from modelforge.core.errors import ArtifactError, ConfigError
from modelforge.core.seed import seed_everything
from modelforge.serve.app import create_app
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe
from modelforge.training.lora import apply_lora
from modelforge.training.trainer import Trainer

pytest.importorskip("peft")
FAST = {"max_steps": 3, "batch_size": 8, "progress": "off", "lr": 0.01, "optimizer": "adamw"}
OWN_MODEL = {"name": "encoder_classifier", "dim": 16, "num_layers": 2, "num_heads": 2, "mlp_hidden": 32,
             "max_positions": 64}


def recipe(tmp_path, model, **sections):
    data = labelled_texts(tmp_path / "texts.csv")
    return {"name": "lora", "task": "text_classification", "data": {"source": "file", "path": str(data)},
            "model": model, "train": dict(FAST), "adapter": {"r": 4}, **sections}


def hf_model(tmp_path):
    return {"name": "hf", "checkpoint": str(tiny_bert(tmp_path / "bert"))}


def _trained(tmp_path, raw, overrides=()):
    """A Trainer run by hand, returning (weights before, weights after, trainer)."""
    loaded = load_recipe(raw, list(overrides))
    seed_everything(loaded.train.seed)
    task = get_task(loaded.task)(loaded)
    splits = task.datasets()
    model = apply_lora(task.build_model(), loaded.adapter)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(task, model, loaded.train, tmp_path / "run")
    trainer.fit(splits)
    return before, model.state_dict(), trainer


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_own_encoder_trains_only_the_adapter_and_its_head(tmp_path):
    before, after, trainer = _trained(tmp_path, recipe(tmp_path, OWN_MODEL))
    changed = _changed(before, after)
    assert any("lora_B" in k for k in changed) and {"head.weight", "head.bias"} <= changed
    assert all("lora_" in k or k.startswith("head.") for k in changed), changed
    adapted = {k.split(".lora_")[0] for k in before if "lora_A" in k}
    assert adapted == {f"encoder.blocks.{i}.{layer}" for i in range(2)
                       for layer in ("attn.qkv", "attn.out", "mlp.fc1", "mlp.fc2")}  # target_modules: auto


def test_merged_and_adapter_artifacts_predict_alike_and_the_adapter_names_its_base(tmp_path):
    model = hf_model(tmp_path)
    merged = modelforge.train(recipe(tmp_path, model), run_dir=tmp_path / "merged")
    alone = modelforge.train(recipe(tmp_path, model, adapter={"r": 4, "save": "adapter"}), run_dir=tmp_path / "alone")
    tensors = load_file(str(alone.model_dir / "model.safetensors"))
    assert all("lora_" in k or ".classifier." in k for k in tensors)
    assert sum(t.numel() for t in tensors.values()) == alone.summary["trainable_parameters"]
    assert alone.summary["trainable_parameters"] < alone.summary["parameters"] / 3
    record = json.loads((alone.model_dir / "config.json").read_text())["adapter"]
    assert record["save"] == "adapter" and len(record["base_sha256"]) == 64
    merged_size, alone_size = ((run.model_dir / "model.safetensors").stat().st_size for run in (merged, alone))
    assert alone_size < merged_size

    texts = ["a good film", "a dull and silly movie 3"]
    a = modelforge.load(merged.directory).predict(texts)
    b = modelforge.load(alone.directory).predict(texts)
    assert [x["probability"] for x in a] == pytest.approx([x["probability"] for x in b], abs=1e-5)
    assert export(alone.directory).max_abs_diff < 1e-4
    with TestClient(create_app([f"alone={alone.directory}"])) as client:
        served = client.post("/models/alone/predict", json={"inputs": texts}).json()["predictions"]
    assert [x["probability"] for x in served] == pytest.approx([x["probability"] for x in b], abs=1e-6)

    weights = tmp_path / "bert" / "model.safetensors"
    state = load_file(str(weights))
    first = sorted(state)[0]
    state[first] = state[first] + 1
    save_file(state, str(weights))
    with pytest.raises(ArtifactError, match="changed since the adapter was trained"):
        modelforge.load(alone.directory)
    shutil.rmtree(tmp_path / "bert")
    with pytest.raises(ArtifactError, match="base checkpoint .* is missing"):
        modelforge.load(alone.directory)
    modelforge.load(merged.directory)  # merged: no base needed


def test_adapter_only_save_needs_an_hf_base(tmp_path):
    with pytest.raises(ConfigError, match="adapter.save=adapter needs model.name=hf"):
        modelforge.train(recipe(tmp_path, OWN_MODEL, adapter={"save": "adapter"}), run_dir=tmp_path / "run")


def test_lora_run_resumes_exactly(tmp_path):
    raw = recipe(tmp_path, {**OWN_MODEL, "dropout": 0.2})
    raw["train"].update(max_steps=6, epochs=3, schedule="constant")  # the cut falls mid-epoch
    whole = modelforge.train(raw, run_dir=tmp_path / "whole")
    modelforge.train(raw, ["train.max_steps=3"], run_dir=tmp_path / "cut")
    resumed = modelforge.train(raw, run_dir=tmp_path / "cut", resume=True)
    assert resumed.summary["steps"] == whole.summary["steps"] == 6
    a, b = (load_file(str(run.model_dir / "model.safetensors")) for run in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dp_sgd_with_lora_keeps_epsilon_and_changes_only_the_adapter(tmp_path):
    raw = recipe(tmp_path, hf_model(tmp_path), privacy={"target_epsilon": 3.0, "max_grad_norm": 1.0})
    raw["train"] = {"epochs": 2, "batch_size": 8, "progress": "off", "lr": 0.05, "optimizer": "sgd",
                    "momentum": 0.5}
    before, after, trainer = _trained(tmp_path, raw)
    report = trainer.privacy.report()
    assert 0 < report["epsilon"] <= 3.0 and report["steps"] == trainer.step > 0
    changed = _changed(before, after)
    assert any("lora_" in k for k in changed) and any("classifier" in k for k in changed)
    assert all("lora_" in k or ".classifier." in k for k in changed), changed
    sampled = [p for p in trainer.model.parameters() if getattr(p, "grad_sample", None) is not None]
    assert all(p.requires_grad for p in sampled)  # per-sample gradients only for the trainable ones


def test_own_gpt_adapts_its_blocks_and_merging_keeps_its_function():
    from modelforge.core.config import AdapterConfig
    from modelforge.core.registry import build
    from modelforge.training.lora import merged

    torch.manual_seed(0)
    model = apply_lora(build("model", "gpt", vocab_size=40, max_positions=16, dim=16, num_layers=2, num_heads=2,
                             dropout=0.0), AdapterConfig(r=2, dropout=0.0))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)  # a language model has no new head
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # a trained-looking adapter (B starts at zero)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    plain = merged(model).eval()
    assert not any("lora_" in name for name in plain.state_dict())
    with torch.no_grad():
        assert (model.eval()(ids) - plain(ids)).abs().max() < 1e-5
        assert (model.generate(ids[:1, :4], 6) == plain.generate(ids[:1, :4], 6)).all()


def test_unknown_target_module_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^adapter.target_modules: .*nope") as caught:
        modelforge.train(recipe(tmp_path, OWN_MODEL, adapter={"target_modules": ["nope"]}), run_dir=tmp_path / "run")
    assert "\n" not in str(caught.value)
