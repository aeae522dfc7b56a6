"""Your own data through the CLI: each documented command trains on a small real file made here."""

import json

import pytest
import yaml

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_cli_trains_on_the_users_table_when_data_source_is_omitted(train_cli, tmp_path):
    table = tmp_path / "notes.csv"
    rows = [("the parcel arrived broken and late", "complaint"), ("thank you the service was great", "praise")] * 12
    table.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    run_dir = tmp_path / "run"
    train_cli("sentiment-lstm", run_dir, [f"data.path={table}", "train.max_steps=2", "train.progress=off"])
    assert json.loads((run_dir / "model" / "task.json").read_text())["labels"] == ["complaint", "praise"]
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["source"] == "file"
