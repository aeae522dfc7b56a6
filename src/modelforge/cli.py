"""The ``modelforge`` command: parses arguments, calls the Python API, prints. Heavy modules are imported lazily so
``modelforge --help`` never imports torch. A ``ModelforgeError`` prints one line to stderr and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        print(f"modelforge: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_train(args: argparse.Namespace) -> int:
    from modelforge.api import train

    run = train(args.recipe, args.overrides, resume=args.resume, run_dir=args.run_dir)
    floats = {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))}
    for key, value in floats.items():
        print(f"{key}: {value:.4f}")
    print(f"steps: {run.summary['steps']}  epochs: {run.summary['epochs']}  time: {run.summary['train_seconds']}s")
    if run.summary.get("stop_reason"):
        print(f"stopped: {run.summary['stop_reason']}")
    print(f"run: {run.directory}")
    print(f"predict: modelforge predict {run.directory} INPUT...")
    print(f"evaluate: modelforge eval {run.directory}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from modelforge.api import evaluate

    metrics = evaluate(args.run, split=args.split)
    _print_json({k: v for k, v in metrics.items() if args.full or isinstance(v, (int, float))})
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from modelforge.api import load

    predictor = load(args.run)
    results = predictor.predict(list(args.inputs))
    _print_json([{"input": i, **r} if isinstance(r, dict) else {"input": i, "output": r}
                 for i, r in zip(args.inputs, results)])
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    from modelforge.core.config import load_yaml
    from modelforge.tasks.recipes import builtin_recipes, load_recipe, recipe_to_dict

    if args.action == "show":
        if not args.name:
            raise SystemExit(_usage("modelforge recipes show NAME"))
        print(yaml.safe_dump(recipe_to_dict(load_recipe(args.name)), sort_keys=False), end="")
        return 0
    for name, path in builtin_recipes().items():
        raw = load_yaml(path)
        print(f"{name:<24} {raw.get('task', '?'):<22} {raw.get('description', '')}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from modelforge.core.registry import entries

    for name, entry in entries("model").items():
        print(f"{name:<28} {entry.description}")
    return 0


def _usage(text: str) -> int:
    print(f"modelforge: error: usage: {text}", file=sys.stderr)
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelforge", description="Build, train, evaluate, explain, export and serve models.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version="modelforge 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a recipe: modelforge train RECIPE|FILE.yaml [key=value ...]")
    p.add_argument("recipe", help="a built-in recipe name (see `modelforge recipes`) or a YAML file")
    p.add_argument("overrides", nargs="*", help="typed overrides such as train.lr=0.01 data.limit=1000")
    p.add_argument("--resume", action="store_true", help="continue the latest run of this recipe from its checkpoint")
    p.add_argument("--run-dir", help="run directory (default: <train.output_dir>/<recipe name>[-N])")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run on its test split")
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--full", action="store_true", help="include non-scalar metrics (confusion matrix)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict with a trained run: modelforge predict RUN INPUT...")
    p.add_argument("run")
    p.add_argument("inputs", nargs="+", help="inputs (image paths for image tasks, text for text tasks)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("recipes", help="list built-in recipes, or `recipes show NAME` for one with all defaults")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("models", help="list registered models with a one-line description")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.func
    from modelforge.core.errors import ModelforgeError

    try:
        return handler(args)
    except ModelforgeError as exc:
        if args.debug:
            raise
        print(f"modelforge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("modelforge: interrupted", file=sys.stderr)
        return 130
