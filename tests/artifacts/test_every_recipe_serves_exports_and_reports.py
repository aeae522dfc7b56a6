"""Every built-in recipe's task can be served (an input kind the server reads), exported (one ONNX graph through
``example_inputs`` or several through ``export_graphs``) and shown in its report (``report_samples``): a new task
that forgets one fails here, not in a user's hands. Each kind, export path and sample view is exercised end to end
by the serve, export and task tests."""

import pytest

from modelforge.serve.inputs import INPUT_KINDS
from modelforge.tasks import get_task
from modelforge.tasks.base import Task
from modelforge.tasks.recipes import builtin_recipes, load_recipe

RECIPES = sorted(builtin_recipes())


def test_there_are_recipes_to_check():
    assert len(RECIPES) >= 30


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_task_is_servable_exportable_and_reported(name):
    task_cls = get_task(load_recipe(name).task)
    assert task_cls.input_kind in INPUT_KINDS, f"{name}: input kind {task_cls.input_kind!r} is not served"
    one_graph = task_cls.example_inputs is not Task.example_inputs
    several = task_cls.export_graphs is not Task.export_graphs
    assert one_graph or several, f"{name}: task {task_cls.name} defines neither example_inputs nor export_graphs"
    assert task_cls.report_samples is not Task.report_samples, f"{name}: task {task_cls.name} has no report sample view"
