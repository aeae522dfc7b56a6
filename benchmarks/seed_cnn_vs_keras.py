"""The seed's CNN trained by modelforge and by Keras 3 in the same run: same MNIST arrays (the toolkit's built-in
loader), same batch size, epochs, optimiser (Adam 1e-3) and test images. Prints each side's epoch time and test
accuracy and the ratio modelforge / Keras (issue 20's goal: the recipe ≤ 0.5× Keras' epoch time at ≥ its accuracy).

modelforge runs its Trainer on the `mnist-cnn` recipe twice: as the recipe is (±2 px shifts, cosine schedule) and
as the seed trained (no augmentation, constant lr). Keras runs the seed's own code — Sequential Conv2D/MaxPooling2D/
Dense with softmax, `compile(adam, sparse_categorical_crossentropy)`, `fit` — on its torch backend unless
KERAS_BACKEND names another (no TensorFlow needed). Keras is optional (`pip install keras`): without it the Keras
figures are skipped with one line and the rest still prints. train_speed.py calls `compare` at a small size.

    python benchmarks/seed_cnn_vs_keras.py [--quick] [--samples 60000] [--epochs 3] [--test-rows 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

from modelforge.core.registry import build
from modelforge.data.builtin.mnist import load_mnist
from modelforge.data.tensors import TensorDataset
from modelforge.tasks import get_task
from modelforge.tasks.base import Splits
from modelforge.tasks.recipes import load_recipe
from modelforge.training.callbacks import Callback
from modelforge.training.trainer import Trainer

RECIPE = "recipe mnist-cnn: ±2 px shifts, cosine lr"
QUICK = {"samples": 1024, "epochs": 2, "test_rows": 1000}  # --quick here and in train_speed.py
PLAIN = "mnist-cnn without augmentation, constant lr (the seed's training)"


class EpochClock(Callback):
    """Wall-clock seconds of each epoch, from the first step to the last optimiser step of that epoch."""

    def on_train_start(self, trainer: Any) -> None:
        self.marks = [time.perf_counter()]

    def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        if trainer.position == 0:  # the Trainer resets its in-epoch position after an epoch's last step
            self.marks.append(time.perf_counter())

    @property
    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def mnist_arrays(samples: int, test_rows: int) -> dict[str, np.ndarray]:
    arrays = load_mnist()
    return {"x": arrays["train_images"][:samples], "y": arrays["train_labels"][:samples],
            "test_x": arrays["test_images"][:test_rows], "test_y": arrays["test_labels"][:test_rows]}


def modelforge_side(data: dict[str, np.ndarray], epochs: int, batch_size: int, augmented: bool) -> dict[str, Any]:
    """Train seed_cnn through the Trainer on the mnist-cnn recipe; returns epoch times and test accuracy."""
    overrides = [f"train.batch_size={batch_size}", f"train.epochs={epochs}", "train.progress=off",
                 "train.checkpoint_every_steps=null", "train.min_steps=null"]
    if not augmented:
        overrides += ["data.shift=0", "train.schedule=constant"]
    recipe = load_recipe("mnist-cnn", overrides)
    task = get_task(recipe.task)(recipe)
    x, y = torch.from_numpy(data["x"][:, None].copy()), torch.from_numpy(data["y"].copy()).long()
    pixels = x.float() / 255
    task.state_dict_ = {"labels": [str(i) for i in range(10)], "channels": 1, "image_size": 28,
                        "mean": [pixels.mean().item()], "std": [pixels.std().item()]}
    torch.manual_seed(0)
    model = build("model", "seed_cnn")
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(task, model, recipe.train, run_dir, callbacks=[clock]).fit(Splits(train=TensorDataset(x, y)))
    test_x = torch.from_numpy(data["test_x"][:, None].copy())
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(task.normalize(chunk)).argmax(1) for chunk in test_x.split(1000)])
    accuracy = (predicted.numpy() == data["test_y"]).mean().item()
    return {"epochs": clock.epochs, "accuracy": accuracy}


def import_keras() -> tuple[Any, str | None]:
    """(keras, None), or (None, why not): the torch backend unless KERAS_BACKEND already names one."""
    os.environ.setdefault("KERAS_BACKEND", "torch")  # read once, when keras is first imported
    try:
        import keras
    except ImportError as exc:  # keras absent, or its backend's framework (e.g. tensorflow) absent
        return None, f"{type(exc).__name__}: {exc}"
    return keras, None


def keras_side(keras: Any, data: dict[str, np.ndarray], epochs: int, batch_size: int) -> dict[str, Any]:
    """The seed's Keras code on the same arrays: pixels / 255, softmax output, sparse cross-entropy, Adam."""
    from keras import layers

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = data["x"][..., None].astype("float32") / 255
    times: list[float] = []
    model.fit(x, data["y"], batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Clock()])
    test_x = data["test_x"][..., None].astype("float32") / 255
    _, accuracy = model.evaluate(test_x, data["test_y"], batch_size=1000, verbose=0)
    return {"epochs": times, "accuracy": float(accuracy), "backend": keras.backend.backend(),
            "version": keras.__version__}


def _line(name: str, result: dict[str, Any], note: str) -> float:
    epoch = statistics.median(result["epochs"])
    print(f"{name}_epoch_s: {epoch:.3f}  (epochs: {', '.join(f'{t:.2f}' for t in result['epochs'])})  "
          f"test_accuracy: {result['accuracy']:.4f}  [{note}]", flush=True)
    return epoch


def compare(samples: int, epochs: int, batch_size: int = 64, test_rows: int = 10000,
            recipe_too: bool = True) -> dict[str, Any]:
    """Run both sides, print their figures and ratios (epoch time = the median epoch), and return them."""
    data = mnist_arrays(samples, test_rows)
    print(f"seed_cnn_vs_keras: {len(data['x'])} MNIST training images, {epochs} epoch(s), batch {batch_size}, "
          f"Adam 1e-3, {len(data['test_x'])} test images, torch threads {torch.get_num_threads()}", flush=True)
    results: dict[str, Any] = {"plain": modelforge_side(data, epochs, batch_size, augmented=False)}
    plain = _line("modelforge", results["plain"], PLAIN)
    keras, missing = import_keras()
    if keras is None:
        print(f"keras: not importable ({missing}); Keras' epoch time, accuracy and the ratio are not measured in "
              "this run (pip install keras; it runs on the torch backend)", flush=True)
    else:
        results["keras"] = keras_side(keras, data, epochs, batch_size)
        peer = _line("keras", results["keras"], f"Keras {results['keras']['version']}, backend "
                     f"{results['keras']['backend']}, the seed's code")
    if recipe_too:
        results["recipe"] = modelforge_side(data, epochs, batch_size, augmented=True)
        recipe = _line("modelforge_recipe", results["recipe"], RECIPE)
    if keras is not None:
        print(f"ratio_modelforge_over_keras: {plain / peer:.3f}  (epoch time; accuracy "
              f"{results['plain']['accuracy'] - results['keras']['accuracy']:+.4f} against Keras)")
        if recipe_too:
            print(f"ratio_modelforge_recipe_over_keras: {recipe / peer:.3f}  (goal <= 0.5 at >= Keras' accuracy; "
                  f"accuracy {results['recipe']['accuracy'] - results['keras']['accuracy']:+.4f})")
        print(f"table: seed_cnn epoch s vs Keras {results['keras']['version']} ({results['keras']['backend']}) | "
              f"{plain:.3f} | {peer:.3f} | {plain / peer:.3f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60000, help="MNIST training images (at most 60,000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-rows", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="1,024 images, 2 epochs, 1,000 test images")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.test_rows = QUICK["samples"], QUICK["epochs"], QUICK["test_rows"]
    start = time.perf_counter()
    compare(args.samples, args.epochs, args.batch_size, args.test_rows)
    print(f"total_s: {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
