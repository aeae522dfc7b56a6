"""Packaging beyond pyproject.toml: the repository's ``benchmarks/`` scripts ship inside the package as
``modelforge.benchmarks``, so ``modelforge bench`` works from an installed wheel. pyproject.toml alone cannot map
one folder outside ``src/`` into the package while discovering the rest, so discovery happens here."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages("src") + ["modelforge.benchmarks"],
    package_dir={"": "src", "modelforge.benchmarks": "benchmarks"},
)
