"""``modelforge generate --dtype bf16|int8`` and ``api.generate(dtype=...)`` on a saved language-model artifact."""

import pytest

from modelforge.api import generate
from modelforge.cli import main
from modelforge.core.errors import ConfigError

TINY = ["data.limit=20000", "data.block_size=32", "model.name=gpt", "model.dim=32", "model.num_layers=1",
        "model.num_heads=2", "model.dropout=0.0"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """An untrained char-level GPT saved as a run: enough to exercise loading and decoding."""
    from modelforge.artifacts.model_dir import save_artifact
    from modelforge.core.seed import seed_everything
    from modelforge.tasks import get_task
    from modelforge.tasks.recipes import load_recipe

    seed_everything(0)
    recipe = load_recipe("shakespeare-char", TINY)
    task = get_task(recipe.task)(recipe)
    task.datasets()
    run = tmp_path_factory.mktemp("lm") / "run"
    save_artifact(run / "model", recipe, task, task.build_model())
    return run


def test_generate_decodes_with_bf16_and_int8_weights(lm_run, capsys):
    texts = {}
    for dtype in ("fp32", "bf16", "int8"):
        assert main(["generate", str(lm_run), "--prompt", "KING:", "--max-new-tokens", "12", "--temperature", "0",
                     "--no-stream", "--dtype", dtype]) == 0
        texts[dtype] = capsys.readouterr().out.rstrip("\n")
    assert texts["fp32"] == generate(lm_run, "KING:", 12, temperature=0)  # fp32 is the default
    for text in texts.values():
        assert text.startswith("KING:") and len(text) == len("KING:") + 12  # one character per token


def test_an_unknown_dtype_is_refused_at_the_edge(lm_run, capsys):
    with pytest.raises(ConfigError, match="--dtype must be one of fp32, bf16, int8"):
        generate(lm_run, "KING:", 4, dtype="fp16")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(lm_run), "--dtype", "fp16"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
