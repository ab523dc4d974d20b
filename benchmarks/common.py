"""What the benchmarks share: the comparison rows and their table, progress
lines, the load-average line, the common command-line options and the end of
``main``, and loading a recipe preset set up for timing.

The benchmarks run as scripts (``benchmarks/`` is on ``sys.path``) and import
this module as ``common``; it puts ``tests/`` on ``sys.path`` for the helpers
the tests and the benchmarks share (``tests/helpers``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    import torch
    from torch.nn import Module

    from fairseq2.recipe.base import Recipe

    from fairseq2_speechmapper.recipe_support.presets import RecipePresets

_TESTS_DIR: Final = Path(__file__).resolve().parents[1] / "tests"

if str(_TESTS_DIR) not in sys.path:
    sys.path.append(str(_TESTS_DIR))

MiB: Final = 2**20

ConfigT = TypeVar("ConfigT")


@dataclass
class Comparison:
    """One row of the final table: ``value / baseline = ratio``."""

    section: str
    case: str
    value_name: str
    value: float
    baseline_name: str
    baseline: float
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.nan


def log(message: str) -> None:
    """Progress goes to stderr; results to stdout."""
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    """The load averages and the CPU count, for the last line of a report."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"
    except OSError:
        return "unknown"


def format_value(value: float, unit: str) -> str:
    if unit == "fraction":
        return f"{value:.1%}"

    if unit == "s/step":
        return f"{value:.3f} s"

    if unit == "MiB" and value < 10:
        return f"{value:.2f} MiB"

    return f"{value:,.1f} {unit}"


def print_table(rows: Sequence[Comparison], *, seconds: float) -> None:
    """Prints ``rows`` as a table, columns as wide as their longest entry."""
    values = [f"{row.value_name} {format_value(row.value, row.unit)}" for row in rows]
    baselines = [f"{row.baseline_name} {format_value(row.baseline, row.unit)}" for row in rows]

    def width(title: str, entries: Sequence[str]) -> int:
        return max([len(title), *(len(e) for e in entries)])

    section_w = width("measurement", [row.section for row in rows])
    case_w = width("case", [row.case for row in rows])
    value_w = width("value", values)
    baseline_w = width("baseline", baselines)

    header = f"{'measurement':<{section_w}} {'case':<{case_w}} {'value':>{value_w}} {'baseline':>{baseline_w}} {'ratio':>7}  note"

    print()
    print(header)
    print("-" * len(header))

    for row, value, baseline in zip(rows, values, baselines):
        print(
            f"{row.section:<{section_w}} {row.case:<{case_w}} {value:>{value_w}} {baseline:>{baseline_w}} {row.ratio:>7.3f}  {row.note}"
        )

    print(f"\nratio = value / baseline. Total {seconds:.0f} s. Load average at the end: {load_average()}.")


def add_run_options(parser: ArgumentParser, *, threads_help: str = "intra-op threads (default: 1)") -> None:
    """``--threads`` and ``--json``, which every timing benchmark takes."""
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")


def add_timing_options(
    parser: ArgumentParser,
    *,
    warmup: tuple[int, int],
    steps: tuple[int, int],
    rounds: tuple[int, int],
    sides: str = "the recipe and the bare loops",
) -> None:
    """``--warmup``, ``--steps`` and ``--rounds`` with their defaults (without,
    with ``--quick``), then ``--threads`` and ``--json``; read them back with
    :func:`timing_options`."""

    def defaults(values: tuple[int, int]) -> str:
        full, quick = values

        return f"default: {full}" if full == quick else f"default: {full}, --quick {quick}"

    parser.add_argument("--warmup", type=int, help=f"untimed steps ({defaults(warmup)})")
    parser.add_argument("--steps", type=int, help=f"timed steps per round ({defaults(steps)})")
    parser.add_argument("--rounds", type=int, help=f"rounds in which {sides} take turns ({defaults(rounds)})")
    parser.set_defaults(timing_defaults=(warmup, steps, rounds))

    add_run_options(parser, threads_help="intra-op threads of all (default: 1, stable on a loaded 2-core machine)")


def timing_options(args: Namespace) -> dict[str, int]:
    """``num_warmup``, ``num_timed``, ``num_rounds`` and ``num_threads`` of the
    options :func:`add_timing_options` added, as keyword arguments."""
    index = 1 if args.quick else 0

    warmup, steps, rounds = (values[index] for values in args.timing_defaults)

    return {
        "num_warmup": args.warmup if args.warmup is not None else warmup,
        "num_timed": args.steps if args.steps is not None else steps,
        "num_rounds": args.rounds if args.rounds is not None else rounds,
        "num_threads": args.threads,
    }


def bare_adamw(config: Any, module: Module) -> torch.optim.AdamW:
    """The AdamW of a train config's ``optimizer`` section, built by hand for
    a bare loop over ``module``'s parameters."""
    import torch

    from fairseq2.recipe.config import AdamWConfig

    adamw = config.optimizer.config
    if not isinstance(adamw, AdamWConfig):
        raise TypeError("The bare loop mirrors AdamW only.")

    return torch.optim.AdamW(
        module.parameters(), lr=adamw.lr, betas=adamw.betas, eps=adamw.eps, weight_decay=adamw.weight_decay
    )


def write_json(file: Path | None, document: Any) -> None:
    if file is not None:
        file.write_text(json.dumps(document, indent=2), encoding="utf-8")


def report(rows: Sequence[Comparison], args: Namespace, *, start: float) -> int:
    """The end of a benchmark's ``main``: the table, then the rows to
    ``--json`` if given; returns the exit code."""
    print_table(rows, seconds=time.perf_counter() - start)

    write_json(args.json, [{**asdict(row), "ratio": row.ratio} for row in rows])

    return 0


def require_linux() -> bool:
    """Whether the peak RSS can be read from /proc; says so on stderr if not."""
    if sys.platform.startswith("linux"):
        return True

    print("This benchmark reads the peak RSS from /proc (Linux only).", file=sys.stderr)

    return False


def load_preset(recipe: Recipe, config_kls: type[ConfigT], presets: RecipePresets, preset: str) -> ConfigT:
    """Loads a train recipe's preset exactly as the recipe CLI does (fairseq2
    0.8.1 has no public API for this, hence its internal config loader)."""
    from fairseq2.composition import _register_library
    from fairseq2.recipe.cli import _RecipeConfigLoader, _swap_default_resolver
    from fairseq2.recipe.composition import _register_train_recipe
    from fairseq2.recipe.internal.config import _RecipeConfigStructurer, _StandardRecipeConfigStructurer
    from fairseq2.runtime.dependency import DependencyContainer

    container = DependencyContainer()

    with _swap_default_resolver(container):
        _register_library(container, no_progress=True)

        _register_train_recipe(container, recipe)

        container.register_type(_RecipeConfigLoader)
        container.register_type(_RecipeConfigStructurer, _StandardRecipeConfigStructurer)

        config = container.resolve(_RecipeConfigLoader).load(config_kls, presets.file(preset), [])

    if not isinstance(config, config_kls):
        raise TypeError(f"The `{preset}` preset did not load as a `{config_kls.__name__}`.")

    return config


def set_up_for_timing(config: Any, *, num_steps: int, num_threads: int) -> None:
    """A train config set up for timing: ``num_steps`` steps, no validation, no
    periodic checkpoints, metrics every step, no TensorBoard, the manifests of
    ``config.dataset.manifest_dir`` read directly (no dataset card, no
    validation split)."""
    config.dataset.name = None
    config.dataset.valid_split = None

    config.regime.num_steps = num_steps
    config.regime.validate_at_start = False
    config.regime.validate_every_n_steps = None
    config.regime.checkpoint_every_n_steps = None
    config.regime.publish_metrics_every_n_steps = 1

    config.common.metric_recorders.tensorboard.enabled = False
    config.common.torch.num_threads = num_threads
