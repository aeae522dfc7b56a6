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
