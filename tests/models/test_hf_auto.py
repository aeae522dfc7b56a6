"""model.name=hf: tiny random transformers checkpoints fine-tuned through the CLI/API, saved pickle-free, loaded
offline, served, exported — and computing exactly what transformers' own classes compute."""

import json
import shutil

import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from hf_checkpoints import corpus, labelled_texts, tiny_bert, tiny_llama, tiny_vit

import modelforge
from modelforge.artifacts.export import export
from modelforge.serve.app import create_app

transformers = pytest.importorskip("transformers")

FAST = {"max_steps": 3, "batch_size": 8, "progress": "off", "lr": 0.01}


def classifier_recipe(tmp_path, **extra):
    checkpoint = tiny_bert(tmp_path / "bert")
    data = labelled_texts(tmp_path / "texts.csv")
    return {"name": "hf-cls", "task": "text_classification", "data": {"source": "file", "path": str(data)},
            "model": {"name": "hf", "checkpoint": str(checkpoint)}, "train": dict(FAST), **extra}


def test_classifier_trains_through_cli_loads_offline_and_matches_transformers(cli, tmp_path):
    recipe = classifier_recipe(tmp_path)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    result = cli("train", str(recipe_file), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "run" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors", "task.json",
                                                           "tokenizer.json", "tokenizer_config.json"]
    kwargs = json.loads((model_dir / "config.json").read_text())["model"]["kwargs"]
    assert kwargs["pretrained"] is False and len(kwargs["hf_config"]["id2label"]) == 2  # the network config inline
    shutil.move(tmp_path / "bert", tmp_path / "moved")  # the artifact alone rebuilds the network
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)  # the checkpoint's tokenizer, copied
    predictor = modelforge.load(tmp_path / "run")
    ids, lengths = predictor.task.preprocess(["a good film", "terrible plot and boring and dull and slow"])
    ours = predictor.task.forward(predictor.model, (ids, lengths))

    predictor.model.net.save_pretrained(tmp_path / "trained")
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "trained").eval()
    mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
    with torch.no_grad():
        theirs = reference(input_ids=ids, attention_mask=mask).logits
    assert ours.shape == (2, 2) and (ours - theirs).abs().max() < 1e-5
    assert lengths[0] < lengths[1] and ids[0, lengths[0]:].eq(0).all()  # the padded row is really padded
    assert their_tokenizer("a good film")["input_ids"] == ids[0, :lengths[0]].tolist()

    with TestClient(create_app([f"hf-cls={tmp_path / 'run'}"])) as client:
        answer = client.post("/models/hf-cls/predict", json={"inputs": ["a good film"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] in ("positive", "negative")
    exported = export(tmp_path / "run")
    assert exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4
    test_accuracy = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["test_accuracy"]
    assert modelforge.evaluate(tmp_path / "run")["test_accuracy"] == test_accuracy  # data re-read offline


def test_causal_lm_generates_with_its_kv_cache_like_transformers(tmp_path):
    checkpoint = tiny_llama(tmp_path / "llama")
    recipe = {"name": "hf-lm", "task": "language_modeling",
              "data": {"source": "file", "path": str(corpus(tmp_path / "corpus.txt")), "block_size": 16},
              "model": {"name": "hf", "checkpoint": str(checkpoint)}, "train": dict(FAST)}
    run = modelforge.train(recipe, run_dir=tmp_path / "run")
    assert run.summary["trainable_parameters"] == run.summary["parameters"]  # no adapter: everything trains
    predictor = modelforge.load(run.directory)
    model, task = predictor.model, predictor.task
    prompt = task.encode_prompt("a good film")
    reference_dir = tmp_path / "trained"
    model.net.save_pretrained(reference_dir)
    reference = transformers.AutoModelForCausalLM.from_pretrained(reference_dir).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        assert (model(ids) - reference(input_ids=ids).logits).abs().max() < 1e-5
        expected = reference.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6,
                                      pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
    from modelforge.tasks.text.generation import SamplingConfig, generate_ids

    cached = generate_ids(model, prompt, SamplingConfig(max_new_tokens=6, temperature=0))
    assert cached == expected
    assert modelforge.api.generate(run.directory, "a good film", max_new_tokens=4, temperature=0)
    assert export(run.directory).max_abs_diff < 1e-4
    shutil.rmtree(checkpoint)  # evaluation re-reads the corpus with the artifact's tokenizer
    assert modelforge.evaluate(run.directory, split="val")["val_loss"] > 0
    # past the 128 positions: the last 128 tokens condition the next one, the cache refilled from them
    long = generate_ids(model, prompt, SamplingConfig(max_new_tokens=131 - len(prompt), temperature=0))
    history = torch.tensor([prompt + long[:-1]])
    with torch.no_grad():
        assert long[-1] == int(reference(input_ids=history[:, -128:]).logits[0, -1].argmax())


def test_missing_checkpoint_is_a_one_line_error(cli, tmp_path):
    recipe = classifier_recipe(tmp_path)
    recipe["model"]["checkpoint"] = str(tmp_path / "nowhere")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    result = cli("train", str(recipe_file), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "model.checkpoint" in result.stderr and "no such folder" in result.stderr


def test_image_classifier_with_lora_uses_its_processor_and_matches_transformers(tmp_path):
    checkpoint = tiny_vit(tmp_path / "vit")  # a 5-label head: replaced by a fresh one for the 10 digits
    recipe = {"name": "hf-vit", "task": "image_classification",
              "data": {"source": "digits", "image_size": 16, "channels": 3, "limit": 120},
              "model": {"name": "hf", "checkpoint": str(checkpoint)}, "train": dict(FAST), "adapter": {"r": 4}}
    run = modelforge.train(recipe, run_dir=tmp_path / "run")
    assert "test_accuracy" in run.metrics and run.summary["trainable_parameters"] < run.summary["parameters"] / 2
    predictor = modelforge.load(run.directory)
    task = predictor.task
    assert task.state_dict_["mean"] == pytest.approx([0.4, 0.5, 0.6])  # the processor's, not the data's
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    pixels = task.normalize(images)
    predictor.model.net.save_pretrained(tmp_path / "trained")
    reference = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "trained").eval()
    with torch.no_grad():
        ours, theirs = predictor.model(pixels), reference(pixel_values=pixels).logits
    assert ours.shape == (2, 10) and (ours - theirs).abs().max() < 1e-5
    assert export(run.directory).max_abs_diff < 1e-4
    shutil.rmtree(checkpoint)  # evaluation re-reads the data with the run's saved processor statistics
    assert modelforge.evaluate(run.directory)["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
