"""``modelforge bench``: run the CPU benchmark scripts and gather their ``table:`` lines.

Each script in ``benchmarks/`` prints ``table: <name> | <ours> | <peer> | <ratio>`` lines for the summary; the rest of
its output goes to the terminal as it runs. GPU-only scripts are left out.

The scripts live in the repository's ``benchmarks/`` folder; a built wheel ships the same files as the
``modelforge.benchmarks`` package (``setup.py`` maps the folder into the package), so the command works from an
installed package as well as from a checkout.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from modelforge.core.errors import ConfigError

GPU_ONLY = {"gpu_gpt2"}
# scripts another benchmark already runs: left out of the default list (each can still be named on its own)
RUN_BY = {"seed_cnn_vs_keras": "train_speed"}
CHECKOUT_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # src/modelforge/ → the repository root


def benchmarks_dir() -> Path:
    """The folder holding the benchmark scripts: the installed ``modelforge.benchmarks`` package, else the
    checkout's ``benchmarks/``."""
    spec = importlib.util.find_spec("modelforge.benchmarks")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if CHECKOUT_BENCHMARKS.is_dir():
        return CHECKOUT_BENCHMARKS
    raise ConfigError("no benchmark scripts found: this modelforge install lacks modelforge.benchmarks and there is "
                      f"no checkout at {CHECKOUT_BENCHMARKS.parent}; reinstall from a wheel built by `pip wheel .`")


def available(folder: Path | None = None) -> list[str]:
    scripts = (folder or benchmarks_dir()).glob("*.py")
    return sorted(p.stem for p in scripts if p.stem not in GPU_ONLY and not p.stem.startswith("_"))


def run_benchmarks(names: list[str], quick: bool = False) -> int:
    known = available()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown benchmark {unknown[0]!r}; available: {', '.join(known)}")
    rows: list[list[str]] = []
    failed = 0
    for name in names or [n for n in known if n not in RUN_BY]:
        command = [sys.executable, str(benchmarks_dir() / f"{name}.py")] + (["--quick"] if quick else [])
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        print(result.stdout, end="")
        if result.returncode != 0:
            failed += 1
            print(f"{name} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
            continue
        rows += [[c.strip() for c in line[6:].split("|")] for line in result.stdout.splitlines()
                 if line.startswith("table:")]
    _print_table(rows)
    return 1 if failed else 0


def _print_table(rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="modelforge bench")
    for column in ("benchmark", "ours", "peer", "ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(row + [""] * (4 - len(row)))[:4])
    Console().print(table)
