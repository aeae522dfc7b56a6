"""The Task protocol: everything task-specific, so that the Trainer, artifacts and server stay generic.

A task turns its ``DataConfig`` into dataset splits, builds its model through the registry, defines the training
step and the evaluation, and for serving turns raw inputs into a batch (``preprocess``) and model outputs into
JSON-able results (``postprocess``). ``state()`` is what a trained model needs besides its weights (labels,
normalisation, tokenizer reference); it is saved as ``task.json`` and handed back to ``from_state``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from modelforge.core.config import Recipe, StrictConfig
from modelforge.core.errors import ConfigError
from modelforge.core.registry import build, get

if TYPE_CHECKING:
    from modelforge.tasks.export_graphs import GraphSet


@dataclass
class Splits:
    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_tensors(cls, tensors: dict[str, tuple[torch.Tensor, ...]], summary: dict[str, Any]) -> Splits:
        """In-memory splits: ``tensors`` maps "train" (and optionally "val", "test") to aligned tensors."""
        from modelforge.data.tensors import TensorDataset

        held = {name: TensorDataset(*tensors[name]) for name in ("val", "test") if name in tensors}
        return cls(TensorDataset(*tensors["train"]), held.get("val"), held.get("test"), summary)


class ServedText(str):
    """A text input that came over the network: tasks treat it as text, never as a path to read (a task may read
    a ``.txt`` path given on the command line, but a client must not make the server read its files)."""


@dataclass
class ReportSamples:
    """Sample predictions for the run report: a PNG figure and/or an HTML fragment (already escaped), or a note
    saying why there are none."""

    png: bytes | None = None
    html: str | None = None
    note: str = ""


@dataclass
class PredictionPicture:
    """One picture of a prediction, saved by ``modelforge predict`` as ``<input stem>.<tag>.png``; the result's
    ``field`` then holds the file's path, and ``replaces`` (the same picture inline as base64), if any, is dropped."""

    field: str
    tag: str
    png: bytes
    replaces: str | None = None


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Task:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    DataConfig: ClassVar[type[StrictConfig]]
    # The classical baseline fitted beside the model on the same split (tasks/baselines.py): "text" (TF-IDF of
    # ``self.baseline_texts``), "pixels" or "audio" (MFCC means); None: no baseline.
    baseline: ClassVar[str | None] = None
    # The values ``model.method`` may take (how the task trains its network, e.g. text classification's auto |
    # finetune | stack); empty: the task takes no method.
    model_methods: ClassVar[tuple[str, ...]] = ()
    # what `modelforge tune` optimises when neither tune.metric nor train.early_stopping names a metric
    validation_metric: ClassVar[tuple[str, str]] = ("val_loss", "minimize")

    def __init__(self, recipe: Recipe, state: dict[str, Any] | None = None):
        self.recipe = recipe
        self.data_cfg = recipe.data
        self.state_dict_: dict[str, Any] = dict(state or {})
        self.artifact_dir: Path | None = None  # set when loaded from an artifact (for files like tokenizer.json)
        # How this task loads another trained run (the GAN's judge): handed in by whoever builds the task (api), since
        # artifacts sit a floor above tasks. ``load_run`` refuses when none was given.
        self.run_loader: Callable[[Path], Any] | None = None

    def load_run(self, path: Path) -> Any:
        """Another trained run, loaded by the injected ``run_loader`` (a Predictor: ``.recipe``, ``.task``,
        ``.model``)."""
        if self.run_loader is None:
            raise ConfigError(f"task {self.name} needs a trained run ({path}) but was built without a run loader "
                              "(build it through modelforge.api)")
        return self.run_loader(path)

    # ---- data -------------------------------------------------------------------------------------------------
    def datasets(self) -> Splits:
        raise NotImplementedError

    def record_used(self, **data_values: Any) -> None:
        """Write ``data.*`` settings decided from the data (inferred columns, a share not held out because a file
        was given) back into the recipe, so the run's recipe.yaml says what was actually used."""
        self.data_cfg = self.data_cfg.model_copy(update=data_values)
        self.recipe = self.recipe.model_copy(update={"data": self.data_cfg})

    def collate(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    # ---- model ------------------------------------------------------------------------------------------------
    def derived_model_kwargs(self) -> dict[str, Any]:
        """Keywords the data decides (num_classes, in_channels, vocab size …); used when the builder takes them."""
        return {}

    def model_kwargs(self) -> dict[str, Any]:
        params = get("model", self.recipe.model.name).parameters()
        kwargs = {k: v for k, v in self.derived_model_kwargs().items() if k in params}
        kwargs.update(self.recipe.model.kwargs())
        return kwargs

    def build_model(self) -> nn.Module:
        return build("model", self.recipe.model.name, **self.model_kwargs())

    # ---- training and evaluation --------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        raise NotImplementedError

    # Tasks with several optimisers (a GAN's discriminator and generator) return {group name: parameters} here and
    # define ``training_steps``; the Trainer then builds one optimiser per group (same train.* settings).
    def optimizer_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]] | None:
        return None

    def training_steps(self, model: nn.Module, batch: Any) -> Iterator[tuple[str, StepOutput]]:
        """Yield (group name, StepOutput) in order; for each one the Trainer runs backward and that group's
        optimiser step (and clears every gradient) before resuming, so a later loss sees the updated parameters."""
        raise NotImplementedError

    def fit_directly(self, model: nn.Module, splits: Splits) -> dict[str, Any] | None:
        """Fit ``model`` without the gradient loop (a frozen encoder under a closed-form or scikit-learn head):
        return what the fit chose (kept as ``fitted`` in the run summary; its ``how``, one line, is printed by
        ``modelforge train``), and the Trainer then only evaluates and
        checkpoints it. None (the default): the Trainer runs its gradient loop."""
        return None

    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        """Metrics over a loader; float values are logged, others (e.g. a confusion matrix) only saved."""
        raise NotImplementedError

    # True when ``evaluate`` gathers what it read from its batches exactly once through ``across_ranks`` (or
    # ``classifier_evaluation``, tasks/metrics.py) before computing any metric, so that it may be handed one rank's
    # share of a split: under torchrun with train.strategy=ddp the Trainer then gives each rank a contiguous share of
    # the evaluation batches and runs ``evaluate`` inside ``gathering_ranks()``. False: every rank evaluates the
    # whole split.
    evaluation_gathers_ranks: ClassVar[bool] = False

    def batch_size_of(self, batch: Any) -> int:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return len(first)

    # ---- artifact ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able task state saved as task.json (labels, normalisation …)."""
        return dict(self.state_dict_)

    def extra_files(self) -> dict[str, bytes]:
        """Files besides task.json written into the artifact (e.g. tokenizer.json)."""
        return {}

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        """Sample predictions on held-out data for ``report.html`` (images with labels, generated text,
        translations, transcripts, detections …); None: this task has no sample view."""
        return None

    # ---- serving ----------------------------------------------------------------------------------------------
    def preprocess(self, inputs: list[Any]) -> Any:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Any, **options: Any) -> Any:
        """The network's outputs for a preprocessed batch; ``options`` are this call's ``call_options`` (decoding
        settings, a generation cap …), passed as arguments so that one call never changes the task's state."""
        return model(batch)

    def check_call_options(self, options: dict[str, Any]) -> None:
        """Refuse per-call options this task does not declare in ``call_options``."""
        unknown = sorted(set(options) - self.call_options)
        if unknown:
            valid = ", ".join(sorted(self.call_options)) or "none"
            raise ConfigError(f"task {self.name} takes no option {', '.join(unknown)} per call (valid: {valid})")

    def postprocess(self, outputs: Any) -> list[Any]:
        raise NotImplementedError

    def prediction_pictures(self, item: Any, result: Any) -> list[PredictionPicture]:
        """The pictures of one prediction that ``modelforge predict`` saves as files (it writes them and puts their
        paths in the JSON): by default the result's inline ``*_png`` fields (reconstructions, generated images).
        Tasks that draw on the input picture (detection, segmentation) override it; drawing only, no files."""
        import base64

        if not isinstance(result, dict):
            return []
        return [PredictionPicture(key[: -len("_png")], key[: -len("_png")], base64.b64decode(value), replaces=key)
                for key, value in result.items() if key.endswith("_png") and isinstance(value, str)]

    # How the HTTP server reads this task's inputs (serve/inputs.py): "image" and "audio" items reach ``preprocess``
    # as the (already size-checked) file bytes, "text" items as ServedText, "video" items as decoded uint8 frames
    # (T, H, W, 3), "seed" items as ints. None: the task is not served over HTTP.
    input_kind: ClassVar[str | None] = None

    # ---- capabilities: declared here, read by explain/, serve/ and api.py (which never switch on a task's name) ---
    # The API verbs this task answers besides predict: "generate", "transcribe", "translate", "sample", "neighbors",
    # "search" (rank images by a text), "caption" (describe an image).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # Which explain adapter applies (explain/adapters.py): "image" (normalised pixels of a classifier), "text" (token
    # embeddings of a classifier with a ``tokenizer``), "audio" (the spectrogram of a classifier); None: no
    # explanations.
    explain_kind: ClassVar[str | None] = None
    # Keywords ``forward`` (and so ``Predictor.predict``) accepts per call.
    call_options: ClassVar[frozenset[str]] = frozenset()
    # The call options a client may give in the query string of ``POST /models/NAME/predict`` (serve/inputs.py), by
    # how they are read: "text" (one value) or "texts" (the key repeated, a list). A request that gives any runs
    # alone, not micro-batched with other requests. Other query keys are refused.
    query_options: ClassVar[dict[str, str]] = {}
    # What ``modelforge video`` draws of one result on a frame (video_annotate.py): "label" (a ``{label,
    # probability}`` result, as a banner) or "boxes" (``{"boxes": [{label, score, box}]}``, as rectangles); None: the
    # results cannot be drawn on a video. Only image and video tasks (``input_kind``) can be run over one.
    frame_result: ClassVar[str | None] = None

    def frames_per_prediction(self) -> int:
        """How many consecutive frames of a stream one prediction sees (``modelforge video``'s default window): 1
        for an image task; a video task's clip length."""
        return 1

    def input_spec(self) -> dict[str, Any]:
        """What ``GET /models`` tells clients about the inputs (kind, image size, sample rate …)."""
        return {"kind": self.input_kind}

    # ---- export -----------------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        """Model inputs as ``forward`` passes them to the network, for ONNX export; the keys (in the order of the
        network's positional arguments) become the ONNX input names. Tasks whose network is exportable override it."""
        raise NotImplementedError(f"task {self.name!r} does not define example_inputs(), so it cannot be exported")

    def export_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Axes that vary in the exported graph, by input name and "output"; the batch axis by default."""
        return {name: {0: "batch"} for name in [*self.example_inputs(1), "output"]}

    def export_graphs(self, model: nn.Module) -> GraphSet | None:
        """Several ONNX graphs instead of one (an encoder–decoder: ``encoder`` + ``decoder``, with the decoding loop
        left to the consumer); None (the default): one graph of ``model`` traced with ``example_inputs``."""
        return None

    @classmethod
    def summary(cls) -> str:
        return cls.description or (inspect.getdoc(cls) or "").splitlines()[0]
