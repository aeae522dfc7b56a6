"""Core: registries, recipe configuration, errors and determinism. Imports nothing heavy."""
