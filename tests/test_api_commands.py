"""The run commands of the Python API check their arguments before reading an artifact: a bad value is a one-line
ConfigError naming the CLI option, even for a run that does not exist."""

import pytest

from modelforge import api
from modelforge.core.errors import ConfigError


@pytest.mark.parametrize(("call", "message"), [
    (lambda run: api.translate(run, ["Amen."], beam_size=0), "--beam must be >= 1, got 0"),
    (lambda run: api.translate(run, ["Amen."], length_penalty=-0.5), "--length-penalty must be >= 0, got -0.5"),
    (lambda run: api.sample(run, n=0), "--n must be at least 1, got 0"),
])
def test_bad_arguments_fail_before_the_run_is_read(tmp_path, call, message):
    with pytest.raises(ConfigError) as caught:
        call(tmp_path / "no-such-run")
    assert str(caught.value) == message
