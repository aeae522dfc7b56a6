"""The seed's CNN trained by modelforge and by Keras 3 in the same run: same MNIST arrays (the toolkit's built-in
loader), same batch size, epochs, optimiser (Adam 1e-3) and test images. Prints each side's epoch time and test
accuracy and the ratio modelforge / Keras (issue 20's goal: the recipe ≤ 0.5× Keras' epoch time at ≥ its accuracy).

modelforge runs its Trainer on the `mnist-cnn` recipe twice: as the recipe is (±2 px shifts, cosine schedule) and
as the seed trained (no augmentation, constant lr). Keras runs the seed's own code — Sequential Conv2D/MaxPooling2D/
Dense with softmax, `compile(adam, sparse_categorical_crossentropy)`, `fit` — on its torch backend unless
KERAS_BACKEND names another (no TensorFlow needed). Keras is in the `test` extra, not a dependency: without it the Keras
figures are skipped with one line and the rest still prints. train_speed.py calls `compare` at a small size.

The sides take turns epoch by epoch (each training loop runs in its own thread and hands the CPU back at the end of
every epoch; the order rotates each epoch), so a change in the machine's load hits all of them alike: on a shared
machine, training one side after the other measured the load, not the sides. The ratio is the median of the
per-epoch ratios of neighbouring epochs.

    python benchmarks/seed_cnn_vs_keras.py [--quick] [--samples 60000] [--epochs 3] [--test-rows 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
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


class EpochTurns:
    """One side's training loop in its own thread, one epoch per turn. The loop calls ``begin()`` before each epoch
    (and once after its last), which parks it until ``turn()`` lets it go, and ``end()`` after each epoch. Only one
    side runs at a time, set-up included: the constructor returns once the loop is parked before its first epoch."""

    def __init__(self, train: Callable[[EpochTurns], dict[str, Any]]):
        self.go, self.parked = threading.Semaphore(0), threading.Semaphore(0)
        self.epochs: list[float] = []
        self.result: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.finished = False
        self.thread = threading.Thread(target=self._run, args=(train,), daemon=True)
        self.thread.start()
        self.parked.acquire()
        self._raise()

    def _run(self, train: Callable[[EpochTurns], dict[str, Any]]) -> None:
        try:
            self.result = train(self)
        except BaseException as exc:  # noqa: BLE001 — re-raised in the caller's thread
            self.error = exc
        finally:
            self.finished = True
            self.parked.release()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def begin(self) -> None:
        self.parked.release()
        self.go.acquire()
        self.start = time.perf_counter()

    def end(self) -> None:
        self.epochs.append(time.perf_counter() - self.start)

    def turn(self) -> None:
        """Let the loop run one epoch and wait until it parks again."""
        if not self.finished:
            self.go.release()
            self.parked.acquire()
        self._raise()

    def finish(self) -> dict[str, Any]:
        """Let the loop run past its last epoch (the untimed test evaluation) and return its result."""
        self.go.release()
        self.thread.join()
        self._raise()
        return {**self.result, "epochs": self.epochs}


class TrainerTurns(Callback):
    """The Trainer's side of EpochTurns: an epoch ends when the Trainer resets its in-epoch position."""

    def __init__(self, turns: EpochTurns):
        self.turns = turns

    def on_train_start(self, trainer: Any) -> None:
        self.turns.begin()

    def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        if trainer.position == 0:
            self.turns.end()
            self.turns.begin()  # park until the next epoch's turn, or finish() after the last one


def mnist_arrays(samples: int, test_rows: int) -> dict[str, np.ndarray]:
    arrays = load_mnist()
    return {"x": arrays["train_images"][:samples], "y": arrays["train_labels"][:samples],
            "test_x": arrays["test_images"][:test_rows], "test_y": arrays["test_labels"][:test_rows]}


def modelforge_side(data: dict[str, np.ndarray], epochs: int, batch_size: int, augmented: bool,
                    turns: EpochTurns) -> dict[str, Any]:
    """Train seed_cnn through the Trainer on the mnist-cnn recipe, an epoch per turn; returns its test accuracy."""
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
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(task, model, recipe.train, run_dir, callbacks=[TrainerTurns(turns)]).fit(
            Splits(train=TensorDataset(x, y)))
    test_x = torch.from_numpy(data["test_x"][:, None].copy())
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(task.normalize(chunk)).argmax(1) for chunk in test_x.split(1000)])
    accuracy = (predicted.numpy() == data["test_y"]).mean().item()
    return {"accuracy": accuracy}


def import_keras() -> tuple[Any, str | None]:
    """(keras, None), or (None, why not): the torch backend unless KERAS_BACKEND already names one."""
    os.environ.setdefault("KERAS_BACKEND", "torch")  # read once, when keras is first imported
    try:
        import keras
    except ImportError as exc:  # keras absent, or its backend's framework (e.g. tensorflow) absent
        return None, f"{type(exc).__name__}: {exc}"
    return keras, None


def keras_side(keras: Any, data: dict[str, np.ndarray], epochs: int, batch_size: int,
               turns: EpochTurns) -> dict[str, Any]:
    """The seed's Keras code on the same arrays (pixels / 255, softmax output, sparse cross-entropy, Adam), an epoch
    per turn. Built and trained in this thread: Keras keeps its global state per thread."""
    from keras import layers

    class Turns(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            turns.begin()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            turns.end()

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
    model.fit(x, data["y"], batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Turns()])
    turns.begin()  # park: the evaluation runs in finish(), after every side's last epoch
    test_x = data["test_x"][..., None].astype("float32") / 255
    _, accuracy = model.evaluate(test_x, data["test_y"], batch_size=1000, verbose=0)
    return {"accuracy": float(accuracy), "backend": keras.backend.backend(), "version": keras.__version__}


def _line(name: str, result: dict[str, Any], note: str) -> None:
    print(f"{name}_epoch_s: {statistics.median(result['epochs']):.3f}  "
          f"(epochs: {', '.join(f'{t:.2f}' for t in result['epochs'])})  "
          f"test_accuracy: {result['accuracy']:.4f}  [{note}]", flush=True)


def compare(samples: int, epochs: int, batch_size: int = 64, test_rows: int = 10000,
            recipe_too: bool = True) -> dict[str, Any]:
    """Train the sides in turns, print their figures and ratios (epoch time = the median epoch), and return them."""
    data = mnist_arrays(samples, test_rows)
    print(f"seed_cnn_vs_keras: {len(data['x'])} MNIST training images, {epochs} epoch(s), batch {batch_size}, "
          f"Adam 1e-3, {len(data['test_x'])} test images, torch threads {torch.get_num_threads()}, "
          "sides interleaved epoch by epoch", flush=True)
    sides = {"plain": EpochTurns(lambda turns: modelforge_side(data, epochs, batch_size, False, turns))}
    keras, missing = import_keras()
    if keras is None:
        print(f"keras: not importable ({missing}); Keras' epoch time, accuracy and the ratio are not measured in "
              "this run (pip install keras; it runs on the torch backend)", flush=True)
    else:
        sides["keras"] = EpochTurns(lambda turns: keras_side(keras, data, epochs, batch_size, turns))
    if recipe_too:
        sides["recipe"] = EpochTurns(lambda turns: modelforge_side(data, epochs, batch_size, True, turns))
    names = list(sides)
    for epoch in range(epochs):  # rotate the order so that no side always runs first or last
        for name in names[epoch % len(names):] + names[: epoch % len(names)]:
            sides[name].turn()
        print(f"epoch {epoch + 1}: " + ", ".join(f"{name} {side.epochs[-1]:.2f} s" for name, side in sides.items()
                                                  if side.epochs), flush=True)
    results = {name: side.finish() for name, side in sides.items()}
    _line("modelforge", results["plain"], PLAIN)
    if keras is not None:
        k = results["keras"]
        _line("keras", k, f"Keras {k['version']}, backend {k['backend']}, the seed's code")
    if recipe_too:
        _line("modelforge_recipe", results["recipe"], RECIPE)
    if keras is not None:
        _ratios(results, recipe_too)
    return results


def _paired_ratio(ours: list[float], peer: list[float]) -> float:
    """The median of the per-epoch ratios: epoch k of each side ran next to each other."""
    return statistics.median(a / b for a, b in zip(ours, peer))


def _ratios(results: dict[str, Any], recipe_too: bool) -> None:
    k = results["keras"]
    plain = _paired_ratio(results["plain"]["epochs"], k["epochs"])
    print(f"ratio_modelforge_over_keras: {plain:.3f}  (epoch time, median of per-epoch ratios; accuracy "
          f"{results['plain']['accuracy'] - k['accuracy']:+.4f} against Keras)")
    if recipe_too:
        recipe = _paired_ratio(results["recipe"]["epochs"], k["epochs"])
        print(f"ratio_modelforge_recipe_over_keras: {recipe:.3f}  (goal <= 0.5 at >= Keras' accuracy; accuracy "
              f"{results['recipe']['accuracy'] - k['accuracy']:+.4f})")
    print(f"table: seed_cnn epoch s vs Keras {k['version']} ({k['backend']}) | "
          f"{statistics.median(results['plain']['epochs']):.3f} | {statistics.median(k['epochs']):.3f} | {plain:.3f}")


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
