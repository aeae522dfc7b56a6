"""The Python API, mirrored by the CLI: ``train(recipe, **overrides) → Run``, ``load(path) → Predictor``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge.core.atomic import atomic_write_json, atomic_write_text
from modelforge.core.errors import ArtifactError, ConfigError, DataError
from modelforge.core.seed import seed_everything
from modelforge.training.run_dirs import ResumePoint, finished_results, nothing_left, resolve_run_dir


@dataclass
class Run:
    directory: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.directory / "model"

    def load(self):
        return load(self.directory)


def train(
    recipe: str | dict | Path,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    report: bool = True,
    baseline: bool = True,
    **kw_overrides: Any,
) -> Run:
    """Train a recipe (name, YAML path or mapping); ``key__sub=value`` keywords override like ``key.sub=value``.
    ``callbacks`` are ``training.callbacks.Callback`` objects given to the Trainer (``modelforge tune`` prunes
    through ``on_eval_end``); ``report=False`` skips ``report.html`` (``modelforge report RUN`` writes it later);
    ``baseline=False`` skips the classical baseline that classification runs fit beside the model."""
    import yaml

    from modelforge.artifacts.model_dir import save_artifact
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe, recipe_to_dict
    from modelforge.training import distributed as dist_utils
    from modelforge.training.trainer import Trainer

    recipe_obj = load_recipe(str(recipe) if isinstance(recipe, Path) else recipe, overrides, **kw_overrides)
    if recipe_obj.adapter is not None:
        from modelforge.training.lora import check_recipe

        check_recipe(recipe_obj)
    env = dist_utils.setup(dist_utils.default_device())
    directory, point = _choose_run_dir(recipe_obj, run_dir, resume, env)

    seed_everything(recipe_obj.train.seed)
    task = get_task(recipe_obj.task)(recipe_obj)
    task.run_loader = _load_run
    started = time.perf_counter()
    splits = task.datasets()
    decided = task.recipe is not recipe_obj  # the task decided settings from the data (columns, splits): save them
    recipe_obj = task.recipe
    claim = run_dir is None and not resume  # a new run named after its recipe: its folder is claimed below
    if decided and env.is_main and not claim:
        atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe_obj), sort_keys=False))
    if recipe_obj.explain is not None:  # fail now, not after training, if the gallery cannot be made
        from modelforge.explain import check_config

        check_config(recipe_obj.explain, task)
    model = task.build_model()
    if recipe_obj.adapter is not None:  # LoRA: only the adapter and the new head train
        from modelforge.training.lora import apply_lora

        model = apply_lora(model, recipe_obj.adapter)
    if claim:
        directory = _claim_run_dir(directory, recipe_obj.name, env)
    trainer = Trainer(task, model, recipe_obj.train, directory, callbacks=callbacks)
    if point is not None:
        done = _already_finished(point, trainer, len(splits.train), env.is_main)
        if done is not None:
            dist_utils.teardown(env)
            return done
    if env.is_main:  # training is about to start: only now does the run directory appear
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe_obj), sort_keys=False))
    summary = trainer.fit(splits, resume=point is not None)
    summary.update(_parameter_counts(model))
    if trainer.privacy is not None:  # the (ε, δ) guarantee of the trained model
        summary["privacy"] = trainer.privacy.report()
    metrics: dict[str, Any] = {}
    if splits.test is not None:
        metrics = trainer.evaluate(splits.test, prefix="test")
        floats = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        trainer.metrics_log.write({"step": trainer.step, "epoch": trainer.epoch, "event": "test", **floats})
    summary.update(train_seconds=round(time.perf_counter() - started, 2), data=splits.summary)
    if env.is_main and baseline:
        _add_baseline(summary, task, splits, metrics)
    final_model = trainer.export_model()
    if env.is_main:
        save_artifact(directory / "model", recipe_obj, task, final_model)
        atomic_write_json(directory / "results.json", {"summary": summary, "metrics": metrics})
        if recipe_obj.explain is not None:
            _write_gallery(directory, splits)
        if report:
            _write_report(directory, splits)
    dist_utils.teardown(env)
    return Run(directory, metrics, summary)


def _choose_run_dir(recipe_obj: Any, run_dir: str | Path | None, resume: bool,
                    env: Any) -> tuple[Path, ResumePoint | None]:
    """Rank 0 chooses (and on --resume checks) the run directory before the data loads, but creates nothing yet;
    under torchrun every rank then uses its choice."""
    chosen = resolve_run_dir(recipe_obj.train.output_dir, recipe_obj.name, run_dir, resume) if env.is_main else None
    if env.enabled:
        import torch.distributed

        holder = [chosen]
        torch.distributed.broadcast_object_list(holder, src=0)
        chosen = holder[0]
    return chosen


def _claim_run_dir(chosen: Path, name: str, env: Any) -> Path:
    """Rank 0 creates the new run's folder (the next free name if another run took the chosen one while the data
    loaded); under torchrun every rank then uses it."""
    from modelforge.training.run_dirs import claim_new_run_dir

    claimed = claim_new_run_dir(chosen, name) if env.is_main else None
    if env.enabled:
        import torch.distributed

        holder = [claimed]
        torch.distributed.broadcast_object_list(holder, src=0)
        claimed = holder[0]
    return claimed


def _already_finished(point: ResumePoint, trainer: Any, n_train: int, is_main: bool) -> Run | None:
    """``--resume`` of a run with nothing left to train: the saved Run, untouched (re-saving would rewrite the model
    and log a second test line). None when training goes on; then say where it resumes from."""
    results = finished_results(point.directory)
    if results is not None and nothing_left(point, trainer.total_steps(n_train), trainer.cfg.epochs):
        summary = {**results.get("summary", {}), "already_finished": True}
        return Run(point.directory, results.get("metrics", {}), summary)
    if is_main:
        print(f"resuming {point.directory} from step {point.step} (epoch {point.epoch}; {point.checkpoint.name})",
              flush=True)
    return None


def _parameter_counts(model: Any) -> dict[str, int]:
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _add_baseline(summary: dict[str, Any], task: Any, splits: Any, metrics: dict[str, Any]) -> None:
    """The classical baseline on the same split, and in words whether the model beat it (classifiers only)."""
    from modelforge.tasks.baselines import run_baseline, verdict

    baseline = run_baseline(task, splits)
    if baseline is not None:
        summary["baseline"] = {**baseline, "verdict": verdict(metrics, baseline)}


def _write_report(directory: Path, splits: Any = None) -> None:
    """The HTML report is a convenience: failing to draw it must not fail a finished training run."""
    import warnings

    from modelforge.report import write_report

    try:
        write_report(directory, splits=splits)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not write {directory / 'report.html'}: {exc} (retry with `modelforge report`)",
                      stacklevel=2)


def _write_gallery(directory: Path, splits: Any) -> None:
    """The recipe's ``explain:`` gallery, from the saved artifact (what the server will explain with); like the
    report, a failure only warns, since the trained model is already saved."""
    import warnings

    from modelforge.artifacts.model_dir import load_artifact
    from modelforge.explain.gallery import write_gallery

    try:
        loaded = load_artifact(directory / "model")
        write_gallery(directory, loaded.task, loaded.model, splits, loaded.recipe.explain)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not write {directory / 'explanations'}: {exc} "
                      f"(retry with `modelforge explain {directory} --gallery`)", stacklevel=2)


def load(path: str | Path, quantized: bool = False):
    """Load a run (or its model/ directory) as a Predictor; ``quantized``: its int8 form (``modelforge quantize``)."""
    from modelforge.explain.predictor import ExplainingPredictor

    return ExplainingPredictor(path, quantized=quantized)


def _load_run(path: Path) -> Any:
    """The run loader tasks are given (the GAN's judge): a plain Predictor."""
    from modelforge.artifacts.predictor import Predictor

    return Predictor(path)


def _load_capable(path: str | Path, verb: str) -> Any:
    """Load a run whose task declares ``verb`` in ``Task.capabilities``; otherwise a one-line ConfigError naming the
    tasks that do."""
    predictor = load(path)
    if verb not in predictor.task.capabilities:
        raise ConfigError(f"{path} is a {predictor.recipe.task} run; {verb} needs a {_tasks_with(verb)} run")
    return predictor


def _tasks_with(capability: str) -> str:
    from modelforge.tasks import get_task, task_names

    return " or ".join(name for name in task_names() if capability in get_task(name).capabilities)


def evaluate(path: str | Path, split: str = "test") -> dict[str, Any]:
    """Re-evaluate a trained run on its recipe's data split."""
    from modelforge.training.trainer import Trainer

    predictor = load(path)
    predictor.task.run_loader = _load_run
    splits = predictor.task.datasets()
    dataset = getattr(splits, split, None)
    if dataset is None:
        raise ArtifactError(f"the recipe of {path} has no {split} split to evaluate on")
    trainer = Trainer(predictor.task, predictor.model, predictor.recipe.train, Path(path))
    return trainer.evaluate(dataset, prefix=split)


def generate(
    path: str | Path,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    on_text: Callable[[str], Any] | None = None,
    dtype: str = "fp32",
) -> str:
    """Continue ``prompt`` with a trained language model; returns prompt + continuation. ``on_text`` receives the
    continuation piece by piece as it is generated (``modelforge generate`` streams it to stdout). ``dtype``
    ``bf16`` or ``int8`` decodes with weights held in that precision (faster; see models/decode_precision.py)."""
    from modelforge.models.decode_precision import DECODE_DTYPES, for_decoding
    from modelforge.tasks.sampling import SamplingConfig

    if dtype not in DECODE_DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DECODE_DTYPES)}, got {dtype!r}")
    predictor = _load_capable(path, "generate")
    cfg = SamplingConfig(max_new_tokens, temperature, top_k, top_p, seed)
    model = for_decoding(predictor.model, dtype)
    return prompt + predictor.task.generate(model, prompt, cfg, on_text=on_text)


def transcribe(path: str | Path, wav_paths: Sequence[str | Path], beam_width: int | None = None) -> list[str]:
    """The text of each WAV file, by a trained speech recognition run; ``beam_width`` switches to beam decoding of
    that width (default: the run's own decoding)."""
    if not wav_paths:
        raise ConfigError("transcribe needs at least one WAV file")
    if beam_width is not None and beam_width < 1:
        raise ConfigError(f"--beam must be a width >= 1, got {beam_width}")
    predictor = _load_capable(path, "transcribe")
    options = {} if beam_width is None else {"decoding": "beam", "beam_width": beam_width}
    return [result["text"] for result in predictor.predict([str(p) for p in wav_paths], **options)]


def translate(path: str | Path, texts: Sequence[str], beam_size: int | None = None,
              length_penalty: float | None = None) -> list[str]:
    """The output text of a trained translation (or summarization) run for each input text, in order; ``beam_size``
    and ``length_penalty`` replace the run's own decoding settings (``modelforge translate``)."""
    if beam_size is not None and beam_size < 1:
        raise ConfigError(f"--beam must be >= 1, got {beam_size}")
    if length_penalty is not None and length_penalty < 0:
        raise ConfigError(f"--length-penalty must be >= 0, got {length_penalty}")
    predictor = _load_capable(path, "translate")
    task = predictor.task
    return task.forward(predictor.model, task.preprocess(list(texts)), beam_size=beam_size,
                        length_penalty=length_penalty)


def caption(path: str | Path, images: Sequence[str | Path], beam_size: int | None = None,
            length_penalty: float | None = None) -> list[str]:
    """A caption for each image file, in order, by a trained image captioning run; ``beam_size`` and
    ``length_penalty`` replace the run's own decoding settings (``modelforge caption``)."""
    if not images:
        raise ConfigError("caption needs at least one image file")
    if beam_size is not None and beam_size < 1:
        raise ConfigError(f"--beam must be >= 1, got {beam_size}")
    if length_penalty is not None and length_penalty < 0:
        raise ConfigError(f"--length-penalty must be >= 0, got {length_penalty}")
    predictor = _load_capable(path, "caption")
    options = {k: v for k, v in {"beam_size": beam_size, "length_penalty": length_penalty}.items() if v is not None}
    return [result["caption"] for result in predictor.predict([str(p) for p in images], **options)]


def sample(path: str | Path, n: int = 64, seed: int | None = None, output: str | Path | None = None,
           columns: int | None = None) -> tuple[Path, int]:
    """Draw ``n`` images from a trained GAN run into a PNG grid (``columns`` wide; default ⌈√n⌉) at
    ``output`` (default ``samples.png`` in the run); returns (file, seed). Without ``seed`` one is drawn from the
    global torch RNG and returned, so the grid can be drawn again (``modelforge sample``)."""
    import torch

    from modelforge.core.atomic import atomic_write_bytes

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    predictor = _load_capable(path, "sample")
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
    target = Path(output) if output else predictor.directory.parent / "samples.png"
    if target.suffix.lower() != ".png":
        raise ConfigError(f"--output {target}: the grid is written as PNG; give a .png file name")
    if not target.parent.is_dir():
        raise ConfigError(f"--output {target}: folder {target.parent} does not exist")
    atomic_write_bytes(target, predictor.task.sample_grid(predictor.model, n, seed, columns))
    return target, seed


def neighbors(path: str | Path, word: str | None, k: int = 10, analogy: Sequence[str] | None = None) -> str:
    """The ``k`` nearest words to ``word`` in a trained word_embeddings run, or with ``analogy=(a, b, c)`` the answers
    to "a is to b as c is to ?": a title line, then one ``word<TAB>similarity`` line each (``modelforge
    neighbors``)."""
    import torch

    predictor = _load_capable(path, "neighbors")
    task = predictor.task
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    with torch.inference_mode():
        if analogy:
            a, b, c = analogy
            found = task.analogy(predictor.model, a, b, c, k)
            title = f"{a} : {b} :: {c} : ?"
        else:
            found = task.neighbors(predictor.model, word, k)
            title = f"nearest to {word}"
    return "\n".join([title, *(f"{item['word']}\t{item['similarity']:.4f}" for item in found)])


def search(path: str | Path, text: str, images: str | Path | Sequence[str | Path], top: int | None = None,
           chunk: int = 64) -> list[dict[str, Any]]:
    """Rank images by their similarity to ``text`` with an image_text_retrieval run (``modelforge search``):
    ``images`` is a folder (its image files, not recursive) or a list of files; returns ``{image, score, rank}``
    best first, the first ``top`` when given."""
    from modelforge.data.formats.image_folder import IMAGE_SUFFIXES

    predictor = _load_capable(path, "search")
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        files = sorted(p for p in Path(images).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{images}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) to search")
    elif isinstance(images, (str, Path)):
        raise DataError(f"{images}: not a folder of images")
    else:
        files = [Path(p) for p in images]
    if top is not None and top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    scores: list[float] = []
    for start in range(0, len(files), chunk):  # scores are cosines, comparable across chunks
        scores += [r["score"] for r in predictor.predict([str(f) for f in files[start : start + chunk]], query=text)]
    order = sorted(range(len(files)), key=lambda i: (-scores[i], i))
    ranked = [{"image": str(files[i]), "score": scores[i], "rank": n + 1} for n, i in enumerate(order)]
    return ranked[:top] if top else ranked


def quantize(path: str | Path, backend: str = "torch", limit: int | None = None) -> dict[str, Any]:
    """Int8 dynamic quantization of a run's Linear layers (``torch``) and/or its ONNX graph (``onnx``), with the
    metric change on its test split and the speed-up, written to ``RUN/model/quantization.json``."""
    from modelforge.artifacts.quantize import quantize_run

    return quantize_run(path, backend, limit)
