"""The instruction-tuning (stage 2) recipe against its own train unit stepped
without fairseq2's trainer, measured in the same run.

Run from the repository root (CPU)::

    .venv/bin/python -m benchmarks.instruct [--quick] [--warmup N] [--steps N] [--rounds N] [--threads N] [--json FILE]

**Step time: the recipe vs its train unit without the trainer**, printed as
``value``, ``baseline`` and ``ratio = value / baseline`` in a table at the end
(per-step times go to stderr), measured as ``benchmarks/pretrain.py`` measures
stage 1:

- **recipe**: fairseq2's trainer runs the instruct recipe in-process
  (``fairseq2.recipe.run``: ``InstructUnit``, ``compute_instruct_loss``
  through ``SpeechLLM``) with validation and periodic checkpoints off and
  metrics published every step; its per-step time is the difference of
  consecutive ``Wall Time`` values in ``metrics/train.jsonl`` (data wait,
  instruction drawing and tokenisation, speech encoder, mapper, splicing, the frozen
  LLM's forward and backward, grad clipping, AdamW, metric bookkeeping).
- **unit, no trainer**: the recipe's own ``InstructUnit`` on the speech LLM
  the library's ``load_speech_llm`` builds from the same card, stepped in a
  plain loop (``common.run_train_unit``: backward, grad clipping, the
  config's AdamW), from the same initial mapper weights, over the same
  batches: the recipe's training reader with the same options and seed, read
  in advance, so this side pays no data loading.
- **unit+reader**: the same loop reading that reader live (its decoding
  threads then compete for the CPU as the recipe's do), so that
  ``recipe / unit+reader`` isolates the trainer's own overhead.

**Step time: the speech encoder on the fly vs the feature cache**: the same recipe run
reading the features ``extract-features`` wrote for the training split
(float32, so that the first-batch losses can be compared) instead of running
the speech encoder; ``ratio = on the fly / cached`` is what the cache saves in stage 2,
where the frozen LLM's forward and backward dominate the step.

Sanity checks: all four train on batches of the same sizes, and on the first
batch, from the same initial weights, the unit loop's and the cached recipe's
loss (and gradient norm) must match the recipe's ``Loss`` (``Gradient Norm``)
to 1e-4 (1e-3) relative, every round.

Models: the instruct ``demo`` preset's set-up (Whisper tiny.en encoder with
``whisper_window: utterance`` → a ``small`` mapper → frozen SmolLM2-135M-
Instruct in eval mode, ASR instructions, cross-entropy only, batches of ≤ 8
utterances / 32 s of the demo corpus, AdamW 1e-4, grad clipping 1.0) when the
demo assets are built, else (and with ``--quick``) the tiny random-weight
assets (wav2vec2 → ``tiny`` mapper → tiny llama) on a generated 64-utterance
corpus of 1–4 s noise. The mapper is randomly initialised (seeded; speed
does not depend on the weights) and written with its card to the temporary
cache; its dropout is off on both sides so that the first-batch losses can
be compared exactly. fp32, the speech encoder run on every step but on the cached side,
one intra-op thread by default.

The sides take turns for ``--rounds`` rounds (the order reversed every other
round); each timed batch (the steps after the first ``--warmup``) counts with
its fastest round, since background load only ever adds time, and the medians
over the batches are compared. Defaults: 2 rounds of 2 warm-up + 6 timed
steps, about 4.5 minutes on 2 cores (``--quick``: tiny models, 2 rounds of
2 + 8 steps, ~15 s). Timings stay sensitive to other processes; the table ends with
the load average.

Nothing is written to the user's cache: the tiny assets, a copy of the demo
cards and the benchmark's mapper card go to a temporary cache directory.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from argparse import ArgumentParser
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from benchmarks.common import (
    Assets,
    Comparison,
    UnitRun,
    add_timing_options,
    best_of_rounds,
    find_demo_corpus,
    iter_batches,
    load_preset,
    log,
    open_train_reader,
    prepare_assets,
    recipe_step_times,
    report,
    run_extraction,
    run_recipe,
    run_train_unit,
    set_up_for_timing,
    step_time_rows,
    timing_options,
    write_tiny_corpus,
)

if TYPE_CHECKING:
    from torch import Tensor

    from fairseq2.data.tokenizers import Tokenizer
    from fairseq2.datasets import DataReader

    from fairseq2_speechmapper.datasets import SpeechBatch
    from fairseq2_speechmapper.models.speechmapper import SpeechMapper
    from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard
    from fairseq2_speechmapper.recipes.instruct.config import InstructConfig
    from fairseq2_speechmapper.speech_llm import SpeechLLM

_MAPPER_CARD: Final = "benchmark_instruct_mapper"

# Float32 sums over a few hundred tokens in another order: the losses agree to
# ~1e-6; the gradient norm goes through a 30-layer backward.
_LOSS_RTOL: Final = 1e-4
_GRAD_NORM_RTOL: Final = 1e-3


@dataclass(kw_only=True)
class Setup:
    """What both sides train: cards and the mapper's arch."""

    label: str
    corpus_dir: Path
    speech_encoder_card: str
    speech_encoder_options: dict[str, object]
    llm_card: str
    mapper_arch: str
    mapper_checkpoint: Path


def write_mapper_card(assets: Assets, work_dir: Path) -> Setup:
    """Writes the card of the benchmark's mapper (its checkpoint comes later,
    see :func:`write_initial_mapper`). Must run before fairseq2 builds its
    asset store, which reads the cards directory once."""
    from fairseq2_speechmapper.asset_store.mapper_card import MapperCard

    if assets.demo_corpus_dir is not None:
        setup = Setup(
            label="demo: whisper tiny.en + small mapper + SmolLM2-135M-Instruct",
            corpus_dir=assets.demo_corpus_dir,
            speech_encoder_card="whisper_tiny_en_encoder",
            speech_encoder_options={"whisper_window": "utterance"},
            llm_card="smollm2_135m_instruct",
            mapper_arch="small",
            mapper_checkpoint=work_dir / "mapper" / "model.pt",
        )
    else:
        from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_SPEECH_ENCODER_CARD

        write_tiny_corpus(work_dir / "tiny_corpus")

        setup = Setup(
            label="tiny: wav2vec2 + tiny mapper + tiny llama",
            corpus_dir=work_dir / "tiny_corpus",
            speech_encoder_card=TINY_SPEECH_ENCODER_CARD,
            speech_encoder_options={},
            llm_card=TINY_LLAMA_CARD,
            mapper_arch="tiny",
            mapper_checkpoint=work_dir / "mapper" / "model.pt",
        )

    card = MapperCard(
        name=_MAPPER_CARD,
        speech_encoder=setup.speech_encoder_card,
        speech_encoder_layer=None,
        speech_encoder_options=setup.speech_encoder_options,
        llm=setup.llm_card,
        # No dropout: the first-batch losses of the two sides must agree.
        model_fields={"model_arch": setup.mapper_arch, "model_config": {"dropout_p": 0.0}},
    )

    card.write(setup.mapper_checkpoint, trained_steps=0)

    return setup


def write_initial_mapper(setup: Setup, *, seed: int) -> dict[str, Tensor]:
    """A seeded random mapper of the card's arch, saved where the card points;
    returns its state dict (the unit loop restarts from it every round, as the
    recipe does from the checkpoint)."""
    import torch

    from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub

    hub = get_speechmapper_model_hub()

    arch = hub.get_arch_config(setup.mapper_arch)
    arch.dropout_p = 0.0

    torch.manual_seed(seed)

    mapper = hub.create_new_model(arch, device=torch.device("cpu"), dtype=torch.float32)

    state_dict = {k: v.detach().clone() for k, v in mapper.state_dict().items()}

    setup.mapper_checkpoint.parent.mkdir(parents=True, exist_ok=True)

    torch.save(state_dict, setup.mapper_checkpoint)

    return state_dict


# ---- the recipe -------------------------------------------------------------------------


def load_instruct_preset(preset: str) -> InstructConfig:
    """Loads an instruct preset exactly as the recipe CLI does."""
    from fairseq2_speechmapper.recipes.instruct.config import InstructConfig
    from fairseq2_speechmapper.recipes.instruct.presets import INSTRUCT_PRESETS
    from fairseq2_speechmapper.recipes.instruct.recipe import InstructRecipe

    return load_preset(InstructRecipe(), InstructConfig, INSTRUCT_PRESETS, preset)


def make_step_config(setup: Setup, *, num_steps: int, num_threads: int) -> InstructConfig:
    """The instruct demo preset on the benchmark's mapper, set up for timing:
    no validation, no periodic checkpoints, metrics every step, no feature
    cache."""
    config = load_instruct_preset("demo")

    config.model.name = _MAPPER_CARD

    config.dataset.manifest_dir = setup.corpus_dir

    config.speech_llm.cache_features_in_memory = False

    set_up_for_timing(config, num_steps=num_steps, num_threads=num_threads)

    if config.task.task != "asr" or config.loss.sigma != 0.0 or config.trainer.grad_accumulation.num_batches != 1:
        raise ValueError("The unit loop steps ASR instructions, cross-entropy only, no gradient accumulation.")

    return config


# ---- the train unit without the trainer -------------------------------------------------


# ---- step time --------------------------------------------------------------------------


def load_unit_model(config: InstructConfig, setup: Setup) -> tuple[SpeechLLM, Tokenizer, int, SpeechMapper]:
    """The recipe's speech LLM built outside fairseq2's trainer by the
    library's :func:`load_speech_llm` from the benchmark's mapper card: a
    mapper of the card's arch without dropout (its weights set per run), the
    frozen speech encoder and LLM; with the pad token id the recipe uses."""
    import torch

    from fairseq2.assets import get_asset_store

    from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub
    from fairseq2_speechmapper.speech_llm import load_speech_llm

    cpu = torch.device("cpu")

    hub = get_speechmapper_model_hub()

    arch = hub.get_arch_config(setup.mapper_arch)
    arch.dropout_p = 0.0

    mapper = hub.create_new_model(arch, device=cpu, dtype=torch.float32)

    mapper.train()

    model, tokenizer, pretrained = load_speech_llm(
        get_asset_store().retrieve_card(_MAPPER_CARD),
        config.speech_llm,
        mapper=mapper,
        unwrapped_mapper=mapper,
        device=cpu,
    )

    return model, tokenizer, pretrained.pad_idx(tokenizer, llm_name=config.speech_llm.llm or pretrained.llm), mapper


def check_first_batch(which: str, first_loss: float, first_grad_norm: float, recipe_first: dict[str, Any]) -> None:
    """The same initial weights on the same first batch: the same loss and
    gradient norm, else the two sides do not train the same thing."""
    for name, value, expected, rtol in (
        ("loss", first_loss, float(recipe_first["Loss"]), _LOSS_RTOL),
        ("gradient norm", first_grad_norm, float(recipe_first["Gradient Norm"]), _GRAD_NORM_RTOL),
    ):
        if not math.isclose(value, expected, rel_tol=rtol):
            raise RuntimeError(f"`{which}` first-batch {name} {value:.6f} != the recipe's {expected:.6f}.")


def measure_steps(
    assets: Assets, work_dir: Path, *, num_warmup: int, num_timed: int, num_rounds: int, num_threads: int
) -> list[Comparison]:
    """Runs the recipe, the recipe from the feature cache and the recipe's
    train unit without the trainer (batches read in advance; the same reader
    read live) in turn, ``num_rounds`` times so that all see the same
    background load, and compares the medians of their timed steps."""
    import torch

    from fairseq2_speechmapper.features import FeatureStorageSection, SpeechEncoderSection
    from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss
    from fairseq2_speechmapper.recipes.instruct.recipe import InstructRecipe
    from fairseq2_speechmapper.recipes.instruct.units import InstructUnit
    from fairseq2_speechmapper.speech_llm import InstructionBuilder
    from fairseq2_speechmapper.stage1 import create_stage1_loss

    num_steps = num_warmup + num_timed

    setup = write_mapper_card(assets, work_dir)

    config = make_step_config(setup, num_steps=num_steps, num_threads=num_threads)

    log(
        f"  models: {setup.label}; {num_threads} intra-op thread(s); {num_rounds} round(s) of {num_warmup} + {num_timed} steps"
    )

    torch.set_num_threads(num_threads)

    initial_mapper = write_initial_mapper(setup, seed=config.common.seed)

    cached_config = deepcopy(config)

    cached_config.dataset.manifest_dir = None
    cached_config.dataset.feature_cache = work_dir / "features"

    # float32: the first-batch losses of the two recipe runs can be compared.
    run_extraction(
        SpeechEncoderSection(
            name=setup.speech_encoder_card,
            layer=None,
            whisper_window=setup.speech_encoder_options.get("whisper_window", "30s"),  # type: ignore[arg-type]
        ),
        config.dataset,
        cached_config.dataset.feature_cache,
        FeatureStorageSection(dtype=torch.float32),
        num_threads=num_threads,
    )

    model, tokenizer, pad_idx, mapper = load_unit_model(config, setup)

    def open_reader() -> DataReader[SpeechBatch]:
        return open_train_reader(config, model.speech_encoder.prepare_input, tokenizer)

    def create_unit(guard: NonFiniteStepGuard) -> InstructUnit:
        loss = InstructLoss(sigma=config.loss.sigma, stage1_loss=create_stage1_loss(config.loss.stage1))

        return InstructUnit(
            model,
            InstructionBuilder(model, config.task),
            loss,
            guard,
            task=config.task.task,
            asr_mix_prob=config.task.asr_mix_prob,
            pad_idx=pad_idx,
            seed=config.common.seed,
        )

    batches = list(iter_batches(open_reader(), num_steps))

    expected_sizes = [b.num_examples for b in batches]

    # Per side, per round, the timed steps' seconds.
    times: dict[str, list[list[float]]] = {"recipe": [], "recipe+cache": [], "unit": [], "unit+reader": []}

    compute_times: list[float] = []

    first_checks: list[tuple[str, UnitRun]] = []

    recipe_first: dict[str, Any] | None = None

    cached_first: dict[str, Any] | None = None

    timed = slice(num_warmup, None)

    for round_nr in range(num_rounds):
        # Reversing the order every other round cancels a drift of the load.
        order = ["unit", "unit+reader", "recipe", "recipe+cache"]
        if round_nr % 2 == 1:
            order.reverse()

        for which in order:
            if which in ("recipe", "recipe+cache"):
                records = run_recipe(
                    config if which == "recipe" else cached_config,
                    work_dir / f"{which.replace('+', '_')}_out_{round_nr}",
                    InstructRecipe(),
                )

                # The run sets the thread count from the config; keep it so.
                torch.set_num_threads(num_threads)

                step_times, sizes = recipe_step_times(records)

                if which == "recipe":
                    compute_times += [float(r["Compute Time"]) for r in records[timed]]

                    recipe_first = records[0]
                else:
                    cached_first = records[0]
            else:
                # From the initial weights every round, as the recipe starts from the checkpoint.
                mapper.load_state_dict(initial_mapper)

                run = run_train_unit(
                    config, mapper, create_unit, batches if which == "unit" else iter_batches(open_reader(), num_steps)
                )

                step_times, sizes = run.step_times, run.batch_sizes

                first_checks.append((which, run))

            if sizes != expected_sizes:
                raise RuntimeError(f"`{which}` trained on other batches: sizes {sizes} != {expected_sizes}.")

            times[which].append(step_times[timed])

            log(f"  round {round_nr + 1} {which:<12} s/step: {' '.join(f'{t:.2f}' for t in step_times)}")

    if recipe_first is None or cached_first is None:
        raise RuntimeError("The recipe did not run.")

    for which, run in first_checks:
        check_first_batch(which, run.first_loss, run.first_grad_norm, recipe_first)

    check_first_batch("recipe+cache", float(cached_first["Loss"]), float(cached_first["Gradient Norm"]), recipe_first)

    log(
        f"  first batch: loss recipe {float(recipe_first['Loss']):.6f}, unit {first_checks[0][1].first_loss:.6f}; "
        f"gradient norm recipe {float(recipe_first['Gradient Norm']):.6f}, unit {first_checks[0][1].first_grad_norm:.6f}"
    )

    log(f"  {statistics.fmean(expected_sizes[timed]):.1f} utterances per timed batch")

    case = f"{setup.label.split(':')[0]} ({num_rounds}x{num_timed} steps)"

    rows = step_time_rows(times, case, num_rounds=num_rounds, num_threads=num_threads, compute_times=compute_times)

    rows.append(
        Comparison(
            section="step time",
            case=case,
            value_name="speech encoder on the fly",
            value=best_of_rounds(times["recipe"]),
            baseline_name="feature cache",
            baseline=best_of_rounds(times["recipe+cache"]),
            unit="s/step",
            note="the recipe both sides; cache: extract-features' float32 features of the training split",
        )
    )

    return rows


def main() -> int:
    parser = ArgumentParser(
        description="The instruction-tuning recipe against its train unit without the trainer, in one run."
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, 2 rounds of 2 + 8 steps (~15 s; the smoke test)"
    )
    add_timing_options(parser, warmup=(2, 2), steps=(6, 8), rounds=(2, 2))
    args = parser.parse_args()

    os.environ.setdefault("FAIRSEQ2_NO_PROGRESS", "1")

    start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="benchmark-instruct-") as tmp:
        work_dir = Path(tmp)

        # Looked up before the cache directory is redirected.
        demo_corpus_dir = None if args.quick else find_demo_corpus()

        assets = prepare_assets(work_dir, demo_corpus_dir=demo_corpus_dir)

        log("[step time] instruct recipe vs its train unit without the trainer")

        rows = measure_steps(assets, work_dir, **timing_options(args))

    return report(rows, args, start=start)


if __name__ == "__main__":
    sys.exit(main())
