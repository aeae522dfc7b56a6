"""Importing this module imports every task module, each registering itself: the registry's provider of "task"."""

from modelforge.tasks import load_all

load_all()
