"""The tables and plots of ``benchmarks.learning``: one run's rows, and
several runs side by side (ablations at equal budget, a data-scaling curve)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROWS = ("untrained", "stage1_only", "it_only", "stage1_it", "slam")

ROW_TITLES = {
    "untrained": "(a) untrained chain",
    "stage1_only": "(b) stage 1 only",
    "it_only": "(c) IT only",
    "stage1_it": "(e) stage 1 + IT",
    "slam": "(d) SLAM-ASR connector, end to end",
}


@dataclass(kw_only=True)
class ChainRow:
    row: str
    """One of :data:`ROWS`."""

    stage1_steps: int
    it_steps: int
    cpu_minutes: float
    """Stage 1 and IT, user + system time of the commands."""

    word_token_accuracy: float | None = None
    stage1_ter: float | None = None
    output_target_norm: float | None = None
    it_accuracy: float | None = None
    wer: float | None = None
    shuffled_wer: float | None = None
    examples: list[dict[str, str]] = field(default_factory=list)


def format_table(rows: list[ChainRow], limit: dict[str, Any] | None, baseline: float) -> str:
    def cell(value: float | None, digits: int = 1) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"

    lines = [
        "| row | stage-1 steps | IT steps | CPU minutes | test word-token acc % (baseline) | test TER % | IT response acc % | test WER % | WER vs shuffled refs % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    for row in rows:
        accuracy = "–" if row.word_token_accuracy is None else f"{row.word_token_accuracy:.1f} ({baseline:.1f})"

        lines.append(
            f"| {ROW_TITLES[row.row]} | {row.stage1_steps} | {row.it_steps} | {cell(row.cpu_minutes)} | {accuracy} "
            f"| {cell(row.stage1_ter)} | {cell(row.it_accuracy)} | {cell(row.wer)} | {cell(row.shuffled_wer)} |"
        )

    if limit is not None:
        lines.append(
            f"| Whisper tiny.en's own decoder (the limit) | – | – | {cell(limit['cpu_minutes'])} | – | – | – | {cell(limit['wer'])} | {cell(limit['shuffled_wer'])} |"
        )

    return "\n".join(lines)


def plot(rows: list[ChainRow], limit: dict[str, Any] | None, baseline: float, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    figure, (stage1_axes, chain_axes) = plt.subplots(1, 2, figsize=(11, 4))

    stage1 = [row for row in rows if row.row == "stage1_only"]

    stage1_axes.plot(
        [row.stage1_steps for row in stage1],
        [row.word_token_accuracy for row in stage1],
        "o-",
        label="word-token accuracy",
    )
    stage1_axes.axhline(baseline, color="grey", linestyle="--", label="frequent-token baseline")
    stage1_axes.set_xlabel("stage-1 steps")
    stage1_axes.set_ylabel("%, unseen test split")
    stage1_axes.set_title("Stage 1: embedding-space decoding")
    stage1_axes.legend()

    for name in ROWS:
        selected = [row for row in rows if row.row == name and row.wer is not None]
        if selected:
            chain_axes.plot(
                [row.cpu_minutes for row in selected], [row.wer for row in selected], "o-", label=ROW_TITLES[name]
            )

    if limit is not None:
        chain_axes.axhline(limit["wer"], color="green", linestyle=":", label="Whisper tiny.en's own decoder")

    chain_axes.set_xlabel("CPU minutes (stage 1 + IT)")
    chain_axes.set_ylabel("WER %, unseen test split")
    chain_axes.set_title("Speech LLM: greedy transcription")
    chain_axes.legend(fontsize=8)

    figure.tight_layout()
    figure.savefig(file, dpi=110)


def compare(work_dirs: list[Path], output_dir: Path) -> int:
    """One table and plot of the stage-1 rows of several runs (ablations at
    equal budget), from their ``learning.json``; runs with the same stage-1
    configuration on train splits of different sizes also give the
    data-scaling curve: accuracy against hours of training speech."""
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    lines = [
        "| run | train split | train hours | stage-1 config | stage-1 steps | CPU minutes | test word-token acc % | test TER % | out/target norm | stage-1-only WER % (shuffled) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    summaries = [
        (work_dir, json.loads((work_dir / "learning.json").read_text(encoding="utf-8"))) for work_dir in work_dirs
    ]

    scaling = scaling_points(summaries)

    figure, all_axes = plt.subplots(1, 2 if scaling else 1, figsize=(11 if scaling else 6, 4), squeeze=False)

    steps_axes = all_axes[0][0]

    baseline = math.nan

    for work_dir, summary in summaries:
        setup = summary["setup"]

        baseline = summary["baseline"]

        rows = [row for row in summary["rows"] if row["row"] == "stage1_only"]

        config = " ".join(setup["stage1_config"]) or "the demo preset"

        for row in rows:
            chain = "–" if row["wer"] is None else f"{row['wer']:.1f} ({row['shuffled_wer']:.1f})"

            lines.append(
                f"| {work_dir.name} | {setup['train_split']} | {_hours(summary)} | {config} | {row['stage1_steps']} | {row['cpu_minutes']:.1f} "
                f"| {row['word_token_accuracy']:.1f} | {row['stage1_ter']:.1f} | {row['output_target_norm']:.2f} | {chain} |"
            )

        steps_axes.plot(
            [row["stage1_steps"] for row in rows],
            [row["word_token_accuracy"] for row in rows],
            "o-",
            label=f"{work_dir.name} ({setup['train_split']})",
        )

    steps_axes.axhline(baseline, color="grey", linestyle="--", label="frequent-token baseline")
    steps_axes.set_xlabel("stage-1 steps")
    steps_axes.set_ylabel("word-token accuracy %, unseen test split")
    steps_axes.legend(fontsize=8)

    if scaling:
        scaling_axes = all_axes[0][1]

        configs = {config for config, _ in scaling}

        # Shades of one colour map: a curve per budget, unlike the other panel's runs.
        colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(scaling)))

        for colour, ((config, steps), points) in zip(colours, sorted(scaling.items())):
            scaling_axes.plot(
                [hours for hours, _ in points],
                [accuracy for _, accuracy in points],
                "o-",
                color=colour,
                label=f"{steps} steps" if len(configs) == 1 else f"{steps} steps: {config}",
            )

        all_hours = sorted({hours for points in scaling.values() for hours, _ in points})

        scaling_axes.axhline(baseline, color="grey", linestyle="--", label="frequent-token baseline")
        scaling_axes.set_xscale("log")
        scaling_axes.set_xticks(all_hours, [f"{hours:.3g}" for hours in all_hours])
        scaling_axes.minorticks_off()
        scaling_axes.set_xlabel("hours of training speech")
        scaling_axes.set_ylabel("word-token accuracy %, unseen test split")
        title = "Data scaling at equal steps"
        scaling_axes.set_title(f"{title}: {next(iter(configs))}" if len(configs) == 1 else title, fontsize=9)
        scaling_axes.legend(fontsize=7)

    figure.tight_layout()

    output_dir.mkdir(parents=True, exist_ok=True)

    figure.savefig(output_dir / "compare.png", dpi=110)

    table = "\n".join(lines)

    (output_dir / "compare.md").write_text(table + "\n", encoding="utf-8")

    print(table)
    print(f"\n{output_dir / 'compare.png'}")

    return 0


def _hours(summary: dict[str, Any]) -> str:
    # Runs from before the summary recorded it have no `train_hours`.
    hours = summary.get("train_hours")

    return "–" if hours is None else f"{hours:.1f}"


def scaling_points(summaries: list[tuple[Path, dict[str, Any]]]) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(hours of training speech, word-token accuracy) per stage-1
    configuration and budget, where at least two train sizes reached it."""
    points: dict[tuple[str, int], dict[float, float]] = {}

    for _, summary in summaries:
        hours = summary.get("train_hours")
        if hours is None:
            continue

        config = " ".join(summary["setup"]["stage1_config"]) or "the demo preset"

        for row in summary["rows"]:
            if row["row"] == "stage1_only" and row["word_token_accuracy"] is not None:
                points.setdefault((config, row["stage1_steps"]), {})[hours] = row["word_token_accuracy"]

    return {key: sorted(by_hours.items()) for key, by_hours in points.items() if len(by_hours) >= 2}
