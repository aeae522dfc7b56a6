"""Capabilities are declared on the Task: explain/, serve/ and api.py read them instead of switching on names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modelforge.core.errors import ConfigError
from modelforge.explain.adapters import KINDS, check_supported, supports
from modelforge.tasks import get_task, task_names
from modelforge.tasks.base import Task

VERBS = {"generate", "transcribe", "translate", "sample", "neighbors", "search", "caption"}


@pytest.mark.parametrize("name", task_names())
def test_every_task_declares_only_known_capabilities(name):
    cls = get_task(name)
    assert cls.capabilities <= VERBS
    assert cls.explain_kind in (None, *KINDS)
    assert isinstance(cls.call_options, frozenset)
    assert set(cls.query_options) <= cls.call_options and set(cls.query_options.values()) <= {"text", "texts"}


def test_the_declared_capabilities_of_the_shipped_tasks():
    declared = {name: get_task(name).capabilities for name in task_names() if get_task(name).capabilities}
    assert declared == {"language_modeling": {"generate"}, "speech_recognition": {"transcribe"},
                        "translation": {"translate"}, "summarization": {"translate"},
                        "image_generation": {"sample"}, "word_embeddings": {"neighbors"},
                        "image_text_retrieval": {"search"}, "image_captioning": {"caption"}}
    explained = {name for name in task_names() if supports(get_task(name))}
    assert explained == {"image_classification", "text_classification", "audio_classification"}


def test_explain_follows_the_declared_kind_not_the_name():
    assert supports(SimpleNamespace(name="my_new_task", explain_kind="image"))
    with pytest.raises(ConfigError, match="not supported for task 'my_new_task'"):
        check_supported(SimpleNamespace(name="my_new_task", explain_kind=None))


def test_undeclared_per_call_options_are_refused():
    class Plain(Task):
        name = "plain"

    class Decoding(Task):
        name = "decoding"
        call_options = frozenset({"beam_width"})

    with pytest.raises(ConfigError, match="task plain takes no option beam_width per call"):
        Plain.check_call_options(SimpleNamespace(name="plain", call_options=Plain.call_options), {"beam_width": 3})
    Decoding.check_call_options(SimpleNamespace(name="decoding", call_options=Decoding.call_options), {"beam_width": 3})


def test_tasks_register_under_their_own_name():
    from modelforge.core.registry import entries

    registered = entries("task")
    assert set(registered) == set(task_names()) and all(e.builder.name == n for n, e in registered.items())


def test_get_task_imports_only_the_task_asked_for():
    import subprocess
    import sys

    code = ("import sys; from modelforge.tasks import get_task; get_task('translation'); "
            "print(sorted(m for m in sys.modules if m.startswith('modelforge.tasks.vision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_tasks_that_shard_their_evaluation_over_ddp_ranks():
    """Declared only by tasks whose evaluate gathers the ranks' rows once: the classifiers (classifier_evaluation) and
    the tasks of tests/tasks/test_sharded_evaluations.py and tests/tasks/test_sharded_vision_evaluations.py
    (across_ranks)."""
    sharded = {name for name in task_names() if get_task(name).evaluation_gathers_ranks}
    assert sharded == {"image_classification", "text_classification", "audio_classification", "video_classification",
                       "language_modeling", "translation", "summarization", "image_captioning", "speech_recognition",
                       "word_embeddings", "image_text_retrieval",
                       "segmentation", "detection", "autoencoding", "image_generation"}
