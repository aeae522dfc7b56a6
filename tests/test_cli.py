import subprocess
import sys


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom modelforge.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules or 'optuna' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: modelforge" in out and out.strip().endswith("NO-TORCH")


def test_unknown_recipe_exits_2_with_one_line(cli):
    result = cli("train", "mnist-cn")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown recipe 'mnist-cn'" in lines[0] and "mnist-cnn" in lines[0]


def test_bad_override_exits_2(cli):
    result = cli("train", "digits-cnn", "train.lr=fast")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "train.lr" in result.stderr
    result = cli("train", "digits-cnn", "train.lrr=0.1")
    assert result.returncode == 2 and "Did you mean train.lr" in result.stderr


def test_debug_shows_traceback(cli):
    result = cli("--debug", "train", "mnist-cn")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_bad_cli_arguments_exit_2(cli):
    result = cli("eval")
    assert result.returncode == 2 and "error" in result.stderr
    result = cli("predict", "/nonexistent/run", "x.png")
    assert result.returncode == 2 and "/nonexistent/run" in result.stderr


def test_recipes_and_models_listing(cli):
    listing = cli("recipes")
    assert listing.returncode == 0 and "mnist-cnn" in listing.stdout and "digits-cnn" in listing.stdout
    shown = cli("recipes", "show", "mnist-cnn")
    assert shown.returncode == 0 and "grad_accum: 1" in shown.stdout and "seed_cnn" in shown.stdout
    models = cli("models")
    assert models.returncode == 0 and "seed_cnn" in models.stdout and "mlp" in models.stdout


def test_a_run_without_a_test_split_prints_its_validation_figures_and_an_eval_command_that_works(tmp_path, capsys):
    from modelforge.cli import main

    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "digits-cnn", "data.limit=128", "data.test_size=0",
                 "train.epochs=1", "train.min_steps=null", "train.batch_size=32", "train.progress=off"]) == 0
    out = capsys.readouterr().out
    assert "no test split (the data has none and none was held out): the validation figures of the last evaluation, " \
           "step 4" in out
    assert "val_accuracy: " in out and "test_accuracy" not in out
    assert f"evaluate: modelforge eval {run} --split val" in out
    assert main(["eval", str(run), "--split", "val"]) == 0 and '"val_accuracy"' in capsys.readouterr().out
