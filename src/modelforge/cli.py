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


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    import os

    if args.nproc and "WORLD_SIZE" not in os.environ:
        from modelforge.training.distributed import launch

        return launch(args.nproc, _without_nproc(args.argv))
    from modelforge.api import train

    run = train(args.recipe, args.overrides, resume=args.resume, run_dir=args.run_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if run.summary.get("already_finished"):
        print(f"{run.directory} already finished (step {run.summary.get('steps')}); nothing to resume, nothing "
              "changed. Raise train.epochs or train.max_steps to train it further")
    if (run.summary.get("data") or {}).get("found"):
        print(run.summary["data"]["found"])
    floats = {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))}  # the test split's figures
    if not floats:  # no test split: the validation figures of the saved weights, else of the last evaluation
        floats, which = _validation_figures(run.summary)
        print(f"no test split (the data has none and none was held out){which}")
    for key, value in floats.items():
        print(f"{key}: {value:.4f}")
    baseline = run.summary.get("baseline")
    if baseline:
        compared = baseline.get("compared") or ["test_accuracy", "test_macro_f1"]
        print(f"baseline ({baseline['method']}): " + "  ".join(f"{name}: {baseline[name]:.4f}" for name in compared))
        print(baseline["verdict"])
    fitted = run.summary.get("fitted")
    if isinstance(fitted, dict):  # a head fitted without gradient steps (Task.fit_directly)
        print(f"fitted without gradient steps: {fitted.get('how', fitted)}")
    print(f"steps: {run.summary['steps']}  epochs: {run.summary['epochs']}  time: {run.summary['train_seconds']}s")
    if run.summary.get("stop_reason"):
        print(f"stopped: {run.summary['stop_reason']}")
    if isinstance(run.summary.get("restored_best"), dict):  # the saved model is that evaluation's, not the last
        print(f"saved weights: the best evaluation, step {run.summary['restored_best'].get('step')}")
    print(f"run: {run.directory}")
    print(f"predict: modelforge predict {run.directory} INPUT...")
    print(f"serve:   modelforge serve {run.directory}   (then open http://127.0.0.1:8000/)")
    print(f"report:  {run.directory / 'report.html'}")
    print(f"evaluate: modelforge eval {run.directory}" + ("" if run.metrics else " --split val"))
    return 0


def _validation_figures(summary: dict) -> tuple[dict[str, float], str]:
    """(the ``val_*`` figures a run without a test split reports, what they are: ``: …`` or nothing when none)."""
    described = {"restored_best": "of the saved weights (the best evaluation, step {step})",
                 "last_eval": "of the last evaluation, step {step}"}
    for key, what in described.items():
        evaluation = summary.get(key)
        figures = {k: v for k, v in (evaluation if isinstance(evaluation, dict) else {}).items()
                   if k.startswith("val_") and isinstance(v, (int, float))}
        if figures:
            return figures, ": the validation figures " + what.format(step=evaluation.get("step"))
    return {}, ""


def cmd_tune(args: argparse.Namespace) -> int:
    from modelforge.tuning import tune

    summary = tune(args.recipe, args.overrides, trials=args.trials, jobs=args.jobs, space=args.space or (),
                   study_dir=args.study_dir, storage=args.storage, study_name=args.study_name, timeout=args.timeout)
    print(summary.table())
    counts = ", ".join(f"{n} {state}" for state, n in summary.states.items())
    print(f"study {summary.study_name}: {counts}  ({summary.storage})")
    values = " ".join(f"{k}={v}" for k, v in summary.best_values.items())
    print(f"best: trial {summary.best_trial}  {summary.metric}={summary.best_value:.4f}  {values}")
    print(f"best run: {summary.best_run_dir}   (its report: modelforge report {summary.best_run_dir})")
    print(f"train it: modelforge train {summary.best_yaml}")
    print(f"trials:   {summary.trials_csv}")
    print(f"report:   {summary.report}")
    print(f"compare:  modelforge compare {summary.study_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from modelforge.api import evaluate

    metrics = evaluate(args.run, split=args.split)
    _print_json({k: v for k, v in metrics.items() if args.full or isinstance(v, (int, float))})
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from modelforge.commands.predict import predict

    _check_output_folder(args.output)
    options = {"labels": args.labels} if args.labels else {}  # zero-shot label prompts (image_text_retrieval)
    if args.templates:
        options["templates"] = args.templates  # prompt ensembling over the labels
    _print_json(predict(args.run, list(args.inputs), args.output, options))  # pictures: files the JSON names
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from modelforge.api import search

    _print_json(search(args.run, args.text, args.images, args.top))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    from modelforge.tasks.recipes import builtin_recipes, load_recipe, load_yaml, recipe_to_dict

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0–65535, got {value}")
    return value


def _check_output_folder(output: str | None) -> None:
    """``--output DIR`` must name a folder (or nothing yet): pictures are written into it."""
    from pathlib import Path

    from modelforge.core.errors import ConfigError

    if output and Path(output).exists() and not Path(output).is_dir():
        raise ConfigError(f"--output {output}: a file of that name exists; give a folder for the predicted pictures")


def _check_port_free(host: str, port: int) -> None:
    """Bind (host, port) once and release it, so an address in use or a bad --host is one line before the models
    load, not uvicorn's log lines and exit 3 after. SO_REUSEADDR as uvicorn sets it: a port in TIME_WAIT is free."""
    import socket

    from modelforge.core.errors import ConfigError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:  # socket.gaierror included
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason} (another server on it? choose --port/--host)") \
            from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from modelforge.serve.app import ServeSettings, serve
    from modelforge.serve.batching import BatchSettings
    from modelforge.serve.server import ServerSettings

    _check_port_free(args.host, args.port)
    batch = BatchSettings(args.max_batch_size, args.max_wait_ms, args.queue_size, args.max_explains, args.batch_window)
    settings = ServeSettings(batch=batch, api_key=args.api_key or os.environ.get("MODELFORGE_API_KEY") or None,
                             max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                             request_timeout=args.request_timeout, quantized=args.quantized, runtime=args.runtime)
    server = ServerSettings(limit_concurrency=args.limit_concurrency, keep_alive_timeout=args.keep_alive_timeout,
                            header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                            shutdown_timeout=args.shutdown_timeout)
    return serve(args.runs, args.host, args.port, settings, log_level=args.log_level, server=server,
                 allowed_hosts=args.allowed_hosts, workers=args.workers)


def cmd_export(args: argparse.Namespace) -> int:
    from modelforge.artifacts.export import export

    result = export(args.run, args.format, output=args.output, opset=args.opset)
    for graph in result.graphs:  # one file, or several (an encoder–decoder: encoder then decoder)
        inputs = ", ".join(f"{name}{shape}" for name, shape in graph.inputs.items())
        role = "" if graph.role == "model" else f"{graph.role}; "
        print(f"wrote {graph.path} ({role}opset {result.opset}; inputs {inputs}; outputs {', '.join(graph.outputs)})")
    if result.max_abs_diff is not None:
        print(f"verified with onnxruntime: max |onnx - torch| = {result.max_abs_diff:.2e}")
    for note in result.notes:
        print(f"verified: {note}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from modelforge.api import quantize

    report = quantize(args.run, args.backend, args.limit)
    if "torch" in report:
        found = report["torch"]
        metric = found["metric"]
        print(f"torch int8 (Linear layers), {found['split']} split of {found['examples']}: {metric} "
              f"{found['fp32']['metrics'][metric]:.4f} -> {found['int8']['metrics'][metric]:.4f} "
              f"(change {found['change']:+.4f}); {found['fp32']['seconds']:.3f}s -> {found['int8']['seconds']:.3f}s "
              f"({found['speedup']:.2f}x)")
    if "onnx" in report:
        found = report["onnx"]
        print(f"onnx int8: {found['file']} ({found['bytes']} bytes, fp32 {found['fp32_bytes']}); "
              f"max |logit change| {found['max_abs_logit_change']:.2e}; {found['speedup']:.2f}x")
    print("serve it: modelforge serve RUN --quantized; in Python: modelforge.load(RUN, quantized=True)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from modelforge.report import write_report

    print(f"wrote {write_report(args.run, output=args.output, samples=args.samples)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from modelforge.report import compare_runs
    from modelforge.tuning.results import study_run_dirs

    runs = [run for path in args.runs for run in (study_run_dirs(path) or [path])]  # a study: its trials' runs
    comparison = compare_runs(runs, output=args.output, metric=args.metric)
    print(comparison.table())
    print(f"curves: {comparison.plot}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from modelforge.benchmarks_runner import run_benchmarks

    return run_benchmarks(args.names, quick=args.quick)


def cmd_generate(args: argparse.Namespace) -> int:
    from modelforge.api import generate

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if not args.no_stream:
        write(args.prompt)
    text = generate(args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                    args.seed, on_text=None if args.no_stream else write, dtype=args.dtype)
    print(text if args.no_stream else "")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from modelforge.commands.explain import explain_command

    for line in explain_command(args.run, args.inputs, args.method, args.target, args.output, args.baseline,
                                args.steps, args.color, args.gallery):
        print(line)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from modelforge.api import sample

    path, seed = sample(args.run, args.n, args.seed, args.output)
    print(f"wrote {path} ({args.n} samples, seed {seed})")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from modelforge.api import transcribe

    texts = transcribe(args.run, args.wavs, beam_width=args.beam)
    if args.json:
        _print_json([{"input": str(p), "text": t} for p, t in zip(args.wavs, texts, strict=True)])
    else:  # the text alone for one file; path<TAB>text lines for several
        print(texts[0] if len(texts) == 1 else "\n".join(f"{p}\t{t}" for p, t in zip(args.wavs, texts, strict=True)))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from modelforge.api import translate

    outputs = translate(args.run, args.texts, beam_size=args.beam, length_penalty=args.length_penalty)
    print("\n".join(outputs))  # one output line per input text, in order
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from modelforge.api import caption

    captions = caption(args.run, args.images, beam_size=args.beam, length_penalty=args.length_penalty)
    if args.json:
        _print_json([{"input": str(p), "caption": c} for p, c in zip(args.images, captions, strict=True)])
    else:  # the caption alone for one image; path<TAB>caption lines for several
        print(captions[0] if len(captions) == 1 else
              "\n".join(f"{p}\t{c}" for p, c in zip(args.images, captions, strict=True)))
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    from modelforge.api import neighbors
    from modelforge.core.errors import ConfigError

    if (args.word is None) == (args.analogy is None):
        raise ConfigError("give either a WORD or --analogy A B C (a is to b as c is to ?)")
    print(neighbors(args.run, args.word, args.k, args.analogy))
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from modelforge.video_annotate import annotate_video

    result = annotate_video(args.run, args.input, args.output, overlay=args.overlay, every=args.every,
                            window=args.window, max_frames=args.max_frames, snapshot=args.snapshot,
                            snapshot_at=args.snapshot_at)
    print(f"wrote {result.path} ({result.frames} frames, {result.width}x{result.height} at {result.fps:g} fps; "
          f"{result.predictions} predictions)")
    if result.labels:
        print("shown: " + ", ".join(f"{label} ×{n}" for label, n in sorted(result.labels.items(), key=lambda x: -x[1])))
    if result.snapshot:
        print(f"snapshot: {result.snapshot}")
    return 0


def _usage(text: str) -> int:
    print(f"modelforge: error: usage: {text}", file=sys.stderr)
    return EXIT_USAGE


def _add_training_commands(sub: Any) -> None:
    """Subcommands that train, tune and look at runs."""
    p = sub.add_parser("train", help="train a recipe: modelforge train RECIPE|FILE.yaml [key=value ...]")
    p.add_argument("recipe", help="a built-in recipe name (see `modelforge recipes`) or a YAML file")
    p.add_argument("overrides", nargs="*", help="typed overrides such as train.lr=0.01 data.limit=1000")
    p.add_argument("--resume", action="store_true", help="continue the latest run of this recipe from its checkpoint")
    p.add_argument("--run-dir", help="run directory (default: <train.output_dir>/<recipe name>[-N])")
    p.add_argument("--nproc", type=int, help="launch N processes on this node through torchrun (see train.strategy)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="search hyperparameters with Optuna: modelforge tune RECIPE [key=value ...] "
                                    "--space KEY=SPEC")
    p.add_argument("recipe", help="a built-in recipe name or a YAML file (its tune: section holds the search)")
    p.add_argument("overrides", nargs="*", help="typed overrides applied to every trial, such as data.limit=1000")
    p.add_argument("--space", action="append", metavar="KEY=SPEC",
                   help="search KEY too: log_uniform:LOW:HIGH, uniform:LOW:HIGH[:STEP], int:LOW:HIGH[:STEP] or "
                        "choice:A,B,... (repeatable; replaces the recipe's tune.space entry for KEY)")
    p.add_argument("--trials", type=_positive_int, help="finished trials the study aims for (default: tune.trials)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--study-dir", help="study directory: study.db, trials/, trials.csv, best.yaml, report.html "
                                       "(default: <train.output_dir>/<recipe name>-tune; again = continue)")
    p.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of a shared study database (e.g. "
                                                    "postgresql://host/db; default: sqlite in the study directory)")
    p.add_argument("--study-name", help="name of the study in the storage (default: the recipe name)")
    p.add_argument("--timeout", type=_non_negative_float, metavar="SECONDS",
                   help="a worker starts no new trial after this long (default: tune.timeout)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("eval", help="evaluate a trained run on its test split")
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--full", action="store_true", help="include non-scalar metrics (confusion matrix)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("recipes", help="list built-in recipes, or `recipes show NAME` for one with all defaults")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("models", help="list registered models with a one-line description")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("report", help="write RUN/report.html: curves, metrics, confusion matrix, samples")
    p.add_argument("run")
    p.add_argument("--output", help="file to write (default: RUN/report.html)")
    p.add_argument("--samples", type=int, default=12, help="sample predictions to show (0 = none)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare runs: a metrics table and overlaid curves (compare.png)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or a study directory (its trials)")
    p.add_argument("--output", default="compare.png", help="curves plot to write (default: compare.png)")
    p.add_argument("--metric", help="validation metric to overlay (default: the first logged, e.g. val_accuracy)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="run the CPU benchmarks and print one table (name, ours, peer, ratio)")
    p.add_argument("names", nargs="*", help="benchmark script names (default: all CPU benchmarks)")
    p.add_argument("--quick", action="store_true", help="small settings (minutes, not tens of minutes)")
    p.set_defaults(func=cmd_bench)


def _add_prediction_commands(sub: Any) -> None:
    """Subcommands that use a trained run on inputs."""
    p = sub.add_parser("predict", help="predict with a trained run: modelforge predict RUN INPUT...")
    p.add_argument("run")
    p.add_argument("inputs", nargs="+", help="inputs (image paths for image tasks, text for text tasks)")
    p.add_argument("--output", help="folder for predicted pictures (detections, masks, reconstructions, generated "
                                    "images; default: beside each input file, else RUN/predictions)")
    p.add_argument("--labels", nargs="+", metavar="PROMPT",
                   help="zero-shot: score each image against these label prompts (image_text_retrieval runs)")
    p.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                   help="zero-shot prompt ensembling: put each --labels value into these templates ('a {}' "
                        "'a white {}') and score it by the mean of its prompts' embeddings")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("search", help="rank images by a text: modelforge search RUN --text TEXT --images DIR")
    p.add_argument("run")
    p.add_argument("--text", required=True, help="the text query")
    p.add_argument("--images", required=True, help="a folder of images to rank")
    p.add_argument("--top", type=_positive_int, help="print only the best N")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("generate", help="continue a prompt with a trained language model (streams tokens)")
    p.add_argument("run")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--no-stream", action="store_true", help="print the text once at the end")
    p.add_argument("--dtype", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="weight precision while decoding: bf16 halves and int8 quarters the bytes read per token")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("transcribe", help="speech to text with a trained speech run: transcribe RUN FILE.wav...")
    p.add_argument("run")
    p.add_argument("wavs", nargs="+", metavar="FILE.wav")
    p.add_argument("--json", action="store_true", help="print a JSON list of {input, text}")
    p.add_argument("--beam", type=int, metavar="WIDTH", help="beam search of this width (default: the run's decoding)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("translate", help="translate (or summarize) with a seq2seq run: translate RUN TEXT...")
    p.add_argument("run")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--beam", type=int, metavar="N", help="beam size (1 = greedy; default: the run's decoding)")
    p.add_argument("--length-penalty", type=float, metavar="ALPHA",
                   help="GNMT length penalty alpha (0 = total log-probability; default: the run's decoding)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("caption", help="describe images with an image captioning run: caption RUN IMAGE...")
    p.add_argument("run")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print a JSON list of {input, caption}")
    p.add_argument("--beam", type=int, metavar="N", help="beam size (1 = greedy; default: the run's decoding)")
    p.add_argument("--length-penalty", type=float, metavar="ALPHA",
                   help="GNMT length penalty alpha (0 = total log-probability; default: the run's decoding)")
    p.set_defaults(func=cmd_caption)


def _add_other_prediction_commands(sub: Any) -> None:
    """Subcommands that give word neighbours, annotated videos, attributions and GAN samples."""
    p = sub.add_parser("neighbors", help="nearest words of a word-embeddings run: neighbors RUN WORD [--k K]")
    p.add_argument("run")
    p.add_argument("word", nargs="?", help="the word to look up")
    p.add_argument("--k", type=int, default=10, help="how many neighbours (default 10)")
    p.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="a is to b as c is to ? (3CosAdd)")
    p.set_defaults(func=cmd_neighbors)

    p = sub.add_parser("video", help="annotate a video with a run's predictions: modelforge video RUN in.avi out.mp4")
    p.add_argument("run", help="a video classifier, image classifier or detector run")
    p.add_argument("input", metavar="in.avi", help="video to read (.avi/.mp4/.mkv …)")
    p.add_argument("output", metavar="out.mp4", help="annotated video to write (.mp4 mp4v, .avi MJPG, .mkv FFV1)")
    p.add_argument("--overlay", choices=["motion", "none"], default="motion",
                   help="motion: heat map + boxes of moving regions by background subtraction (default)")
    p.add_argument("--every", type=_positive_int, default=1, help="predict every N frames (default 1)")
    p.add_argument("--window", type=_positive_int, help="video classifier: frames per sliding window (default: "
                                                         "its training clip length)")
    p.add_argument("--max-frames", type=_positive_int, help="stop after N frames")
    p.add_argument("--snapshot", metavar="PNG", help="also save one annotated frame as a PNG")
    p.add_argument("--snapshot-at", type=int, metavar="FRAME", help="0-based frame for --snapshot (default: middle)")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("explain", help="attributions of a run's predictions: modelforge explain RUN INPUT...")
    p.add_argument("run")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image/WAV paths, or texts for text models")
    p.add_argument("--method", choices=["integrated_gradients", "saliency", "occlusion", "gradient_shap"],
                   help="attribution method (default: the recipe's explain.method, else integrated_gradients)")
    p.add_argument("--target", metavar="LABEL", help="label to explain (default: the predicted one)")
    p.add_argument("--output", metavar="DIR", help="where to write PNG/.npy/HTML files (default: RUN/explained)")
    p.add_argument("--baseline", choices=["black", "mean"], help="reference input (default: black/silence/[PAD])")
    p.add_argument("--steps", type=_positive_int, help="integrated gradients: steps of the path integral")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="coloured tokens (text)")
    p.add_argument("--gallery", action="store_true", help="(re)write RUN/explanations from held-out data instead")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("sample", help="draw images from a GAN run into a PNG grid: modelforge sample RUN --n 64")
    p.add_argument("run")
    p.add_argument("--n", type=_positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=int, default=None, help="same seed, same images (default: a random seed, printed)")
    p.add_argument("--output", metavar="FILE.png", help="file to write (default: RUN/samples.png)")
    p.set_defaults(func=cmd_sample)


def _add_deployment_commands(sub: Any) -> None:
    """Subcommands that serve, export and quantize runs."""
    p = sub.add_parser("serve", help="serve runs over HTTP with micro-batching: modelforge serve RUN [RUN ...]")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (NAME=RUN to choose the model name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY); prefer env MODELFORGE_API_KEY")
    p.add_argument("--max-batch-size", type=_positive_int, default=32, help="inputs per model call (1 = off)")
    p.add_argument("--max-wait-ms", type=_non_negative_float, default=5.0,
                   help="longest wait to fill a batch (with --batch-window fixed)")
    p.add_argument("--batch-window", choices=["adaptive", "fixed"], default="adaptive",
                   help="adaptive: a request that finds its model idle runs at once, and those arriving meanwhile "
                        "form the next batch; fixed: also wait up to --max-wait-ms for a fuller batch")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto",
                   help="what runs the batched forward: auto uses RUN/model.onnx (modelforge export) with "
                        "onnxruntime when it matches the model, else PyTorch")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="server processes on the port (SO_REUSEPORT), each with its own models and batchers")
    p.add_argument("--queue-size", type=_positive_int, default=256, help="waiting requests before HTTP 503")
    p.add_argument("--max-body-mb", type=_non_negative_float, default=8.0, help="request body limit in MiB")
    p.add_argument("--max-explains", type=_positive_int, default=2,
                   help="explanations waiting or running per model before HTTP 503 (they run one at a time)")
    p.add_argument("--request-timeout", type=_positive_float, default=60.0,
                   help="seconds a request may wait for its model before HTTP 504")
    p.add_argument("--allowed-hosts", nargs="+", default=[], metavar="HOST",
                   help="Host header names to answer besides the bound address (checked when there is no API key)")
    p.add_argument("--limit-concurrency", type=_positive_int, default=100,
                   help="open connections plus requests in progress before HTTP 503")
    p.add_argument("--keep-alive-timeout", type=_positive_float, default=5.0, help="idle keep-alive seconds")
    p.add_argument("--header-timeout", type=_positive_float, default=10.0,
                   help="seconds to receive a request's headers before the connection is closed")
    p.add_argument("--body-timeout", type=_positive_float, default=60.0,
                   help="seconds to receive a request's body once its headers have arrived")
    p.add_argument("--shutdown-timeout", type=_positive_float, default=30.0,
                   help="on SIGTERM/SIGINT, seconds to let requests in progress finish (a second signal: at once)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--quantized", action="store_true", help="serve the int8 models (run `modelforge quantize` first)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run to ONNX, verified with onnxruntime: modelforge export RUN")
    p.add_argument("run")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--opset", type=_positive_int, default=17)
    p.add_argument("--output", help="file to write (default: RUN/model.onnx; an encoder–decoder writes "
                   "RUN/model.encoder.onnx and RUN/model.decoder.onnx, or X.encoder.onnx/X.decoder.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="int8 dynamic quantization of a run, measured: modelforge quantize RUN")
    p.add_argument("run")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "both"],
                   help="torch: int8 Linear layers (serve/load use them); onnx: RUN/model.int8.onnx; both")
    p.add_argument("--limit", type=_positive_int, help="measure on the first N held-out examples only")
    p.set_defaults(func=cmd_quantize)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelforge", description="Build, train, evaluate, explain, export and serve models.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version="modelforge 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_training_commands(sub)
    _add_prediction_commands(sub)
    _add_other_prediction_commands(sub)
    _add_deployment_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
