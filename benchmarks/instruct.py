"""The instruction-tuning (stage 2) recipe against a bare PyTorch loop on the
same modules, measured in the same run.

Run from the repository root (CPU)::

    .venv/bin/python benchmarks/instruct.py [--quick] [--warmup N] [--steps N] [--rounds N] [--threads N] [--json FILE]

**Step time: the recipe vs a bare PyTorch loop**, printed as ``value``,
``baseline`` and ``ratio = value / baseline`` in a table at the end (per-step
times go to stderr), measured as ``pretrain.py`` measures stage 1:

- **recipe**: fairseq2's trainer runs the instruct recipe in-process
  (``fairseq2.recipe.run``: ``InstructUnit``, ``compute_instruct_loss``
  through ``SpeechLLM``) with validation and periodic checkpoints off and
  metrics published every step; its per-step time is the difference of
  consecutive ``Wall Time`` values in ``metrics/train.jsonl`` (data wait,
  instruction drawing and tokenisation, speech encoder, mapper, splicing, the frozen
  LLM's forward and backward, grad clipping, AdamW, metric bookkeeping).
- **bare loop**: a plain loop written here, independent of ``SpeechLLM`` and
  ``ChatTemplate``: the speech encoder under ``no_grad``, the mapper, per example
  ``embed(before) ; speech ; embed(after) ; embed(response[:-1])`` joined by
  ``torch.cat`` and right-padded, ``llm.decoder`` + ``llm.final_proj`` at the
  response positions, ``F.cross_entropy``, ``backward``, grad clipping,
  ``torch.optim.AdamW``. The prompt halves come from the tokenizer's own chat
  template (``apply_chat_template`` split at a marker), the response is the
  transcript's tokens plus the tokenizer's EOS (the end of turn). Same frozen
  speech encoder and LLM cards, same initial mapper weights, same instruction wordings
  (drawn as ``InstructUnit`` draws them), over the same batches: the recipe's
  training reader with the same options and seed, read in advance, so this
  side pays no data loading.
- **bare+reader**: the same loop reading that reader live (its decoding
  threads then compete for the CPU as the recipe's do), so that
  ``recipe / bare+reader`` compares two sides that both load data.

**Step time: the speech encoder on the fly vs the feature cache**: the same recipe run
reading the features ``extract-features`` wrote for the training split
(float32, so that the first-batch losses can be compared) instead of running
the speech encoder; ``ratio = on the fly / cached`` is what the cache saves in stage 2,
where the frozen LLM's forward and backward dominate the step.

Sanity checks: all four train on batches of the same sizes, and on the first
batch, from the same initial weights, the bare loop's and the cached recipe's
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
import random
import statistics
import sys
import tempfile
import time
from argparse import ArgumentParser
from collections.abc import Iterable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

# One set of conventions with `pretrain.py`: its assets, recipe log, rows and table.
from common import (
    Comparison,
    add_timing_options,
    bare_adamw,
    load_preset,
    log,
    report,
    set_up_for_timing,
    timing_options,
)
from pretrain import (
    Assets,
    best_of_rounds,
    find_demo_corpus,
    iter_batches,
    prepare_assets,
    recipe_step_times,
    run_extraction,
    run_recipe,
    step_time_rows,
    write_tiny_corpus,
)

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

    from fairseq2.data.tokenizers import Tokenizer
    from fairseq2.datasets import DataReader
    from fairseq2.models.transformer_lm import TransformerLM

    from fairseq2_speechmapper.datasets import SpeechBatch
    from fairseq2_speechmapper.recipes.instruct.config import InstructConfig
    from fairseq2_speechmapper.speech_encoders import SpeechEncoder

_MAPPER_CARD: Final = "benchmark_instruct_mapper"

# Marks where the speech goes in the rendered chat prompt (a private-use code
# point, as no instruction or template contains one).
_SPEECH_MARKER: Final = "\ue001SPEECH\ue001"

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
    returns its state dict (the bare loop restarts from it every round, as the
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
        raise ValueError("The bare loop mirrors ASR instructions, cross-entropy only, no gradient accumulation.")

    return config


# ---- the bare loop ----------------------------------------------------------------------


@dataclass(kw_only=True)
class BareModules:
    """The modules of the bare loop, loaded from the same cards as the recipe's."""

    speech_encoder: SpeechEncoder
    mapper: Module
    llm: TransformerLM
    tokenizer: Tokenizer


def load_bare_modules(setup: Setup, initial_mapper: dict[str, Tensor]) -> BareModules:
    import torch

    from fairseq2.data.tokenizers import load_tokenizer
    from fairseq2.models import load_model
    from fairseq2.models.transformer_lm import TransformerLM

    from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub
    from fairseq2_speechmapper.speech_encoders import SpeechEncoderOptions, load_speech_encoder

    cpu = torch.device("cpu")

    speech_encoder = load_speech_encoder(
        setup.speech_encoder_card,
        device=cpu,
        dtype=torch.float32,
        options=SpeechEncoderOptions(**setup.speech_encoder_options),  # type: ignore[arg-type]
    )

    hub = get_speechmapper_model_hub()

    arch = hub.get_arch_config(setup.mapper_arch)
    arch.dropout_p = 0.0

    mapper = hub.create_new_model(arch, device=cpu, dtype=torch.float32)

    mapper.load_state_dict(initial_mapper)

    llm = load_model(setup.llm_card, device=cpu, dtype=torch.float32)
    if not isinstance(llm, TransformerLM):
        raise TypeError(f"The `{setup.llm_card}` card does not hold a decoder-only LLM.")

    llm.requires_grad_(False)
    llm.eval()

    return BareModules(speech_encoder=speech_encoder, mapper=mapper, llm=llm, tokenizer=load_tokenizer(setup.llm_card))


def open_train_reader(config: InstructConfig, modules: BareModules) -> DataReader[SpeechBatch]:
    """The recipe's training reader (``create_split_reader``): the same
    dataset options, seed, input preparation and text encoder, so the same
    batches in the same order."""
    import torch

    from fairseq2.gang import create_fake_gangs

    from fairseq2_speechmapper.datasets import SpeechManifestDataset, SpeechManifestDatasetConfig

    dataset = SpeechManifestDataset.from_config(SpeechManifestDatasetConfig(manifest_dir=config.dataset.manifest_dir))

    return dataset.create_reader(
        config.dataset.train_split,
        create_fake_gangs(torch.device("cpu")),
        config.dataset,
        prepare_input=modules.speech_encoder.prepare_input,
        encode_text=modules.tokenizer.create_raw_encoder(),
        training=True,
        seed=config.common.seed,
    )


class BarePrompts:
    """Prompt halves around the speech and response tokens, straight from the
    tokenizer's own chat template (the speech before the instruction)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        import torch

        self._encoder: Any = tokenizer.create_raw_encoder()

        eos_idx = tokenizer.vocab_info.eos_idx
        if eos_idx is None:
            raise ValueError("The bare loop ends responses with the tokenizer's EOS, and this one has none.")

        self._end_of_turn = torch.tensor([eos_idx])

        self._halves: dict[str, tuple[Tensor, Tensor]] = {}

    def halves(self, instruction: str) -> tuple[Tensor, Tensor]:
        halves = self._halves.get(instruction)
        if halves is None:
            messages = [{"role": "user", "content": f"{_SPEECH_MARKER}\n{instruction}"}]

            text = self._encoder.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

            before, after = text.split(_SPEECH_MARKER)

            halves = self._halves[instruction] = (self._encode(before), self._encode(after))

        return halves

    def response(self, text: str) -> Tensor:
        import torch

        return torch.cat([self._encode(text), self._end_of_turn])

    def _encode(self, text: str) -> Tensor:
        import torch

        return self._encoder(text).to(torch.int64)


@dataclass(kw_only=True)
class BareRun:
    step_times: list[float]
    batch_sizes: list[int]
    first_loss: float
    first_grad_norm: float


def run_bare_loop(
    config: InstructConfig, modules: BareModules, initial_mapper: dict[str, Tensor], batches: Iterable[SpeechBatch]
) -> BareRun:
    """Plain PyTorch instruction tuning over ``batches`` from the initial
    mapper weights; returns each step's seconds (fetching the batch included)
    and number of examples, and the first step's loss and gradient norm."""
    import torch
    import torch.nn.functional as F

    from fairseq2.nn import BatchLayout

    speech_encoder, mapper, llm = modules.speech_encoder, modules.mapper, modules.llm

    mapper.load_state_dict(initial_mapper)
    mapper.train()

    optimizer = bare_adamw(config, mapper)

    max_grad_norm = config.trainer.max_grad_norm

    prompts = BarePrompts(modules.tokenizer)

    instructions = config.task.asr_prompts

    embed = llm.decoder_frontend.embed

    run = BareRun(step_times=[], batch_sizes=[], first_loss=math.nan, first_grad_norm=math.nan)

    iterator = iter(batches)

    step_nr = 0

    while True:
        start = time.perf_counter()

        batch = next(iterator, None)
        if batch is None:
            break

        step_nr += 1

        # The wordings `InstructUnit` draws at this step (one per utterance).
        rng = random.Random(config.common.seed * 1_000_003 + step_nr)

        with torch.no_grad():
            features, features_layout = speech_encoder(batch.inputs, batch.inputs_layout)

        speech, speech_layout = mapper(features, features_layout)

        sequences, response_starts, targets = [], [], []

        for i, transcript in enumerate(batch.texts):
            before, after = prompts.halves(rng.choice(instructions))

            response = prompts.response(transcript)

            prefix = torch.cat([embed(before), speech[i, : speech_layout.seq_lens[i]], embed(after)])

            sequences.append(torch.cat([prefix, embed(response[:-1])]))

            # The position before each response token predicts it.
            response_starts.append(prefix.size(0) - 1)

            targets.append(response)

        seq_lens = [s.size(0) for s in sequences]

        padded = torch.zeros((len(sequences), max(seq_lens), sequences[0].size(1)))

        for i, seq in enumerate(sequences):
            padded[i, : seq_lens[i]] = seq

        hidden = llm.decoder(padded, BatchLayout.of(padded, seq_lens))

        response_hidden = torch.cat(
            [hidden[i, s : s + t.numel()] for i, (s, t) in enumerate(zip(response_starts, targets))]
        )

        loss = F.cross_entropy(llm.final_proj(response_hidden), torch.cat(targets))

        loss.backward()

        # With no bound (`max_grad_norm: null`) the norm is only measured, as by the trainer.
        grad_norm = torch.nn.utils.clip_grad_norm_(
            mapper.parameters(), math.inf if max_grad_norm is None else max_grad_norm
        )

        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        run.step_times.append(time.perf_counter() - start)

        run.batch_sizes.append(batch.num_examples)

        if step_nr == 1:
            run.first_loss, run.first_grad_norm = float(loss.detach()), float(grad_norm)

    return run


# ---- step time --------------------------------------------------------------------------


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
    """Runs the recipe, the recipe from the feature cache and two bare loops
    (batches read in advance; the same reader read live) in turn,
    ``num_rounds`` times so that all see the same background load, and
    compares the medians of their timed steps."""
    import torch

    from fairseq2_speechmapper.features import FeatureStorageSection, SpeechEncoderSection

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

    modules = load_bare_modules(setup, initial_mapper)

    batches = list(iter_batches(open_train_reader(config, modules), num_steps))

    expected_sizes = [b.num_examples for b in batches]

    # Per side, per round, the timed steps' seconds.
    times: dict[str, list[list[float]]] = {"recipe": [], "recipe+cache": [], "bare": [], "bare+reader": []}

    compute_times: list[float] = []

    first_checks: list[tuple[str, BareRun]] = []

    recipe_first: dict[str, Any] | None = None

    cached_first: dict[str, Any] | None = None

    timed = slice(num_warmup, None)

    for round_nr in range(num_rounds):
        # Reversing the order every other round cancels a drift of the load.
        order = ["bare", "bare+reader", "recipe", "recipe+cache"]
        if round_nr % 2 == 1:
            order.reverse()

        for which in order:
            if which in ("recipe", "recipe+cache"):
                from fairseq2_speechmapper.recipes.instruct.recipe import InstructRecipe

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
                if which == "bare":
                    bare = run_bare_loop(config, modules, initial_mapper, batches)
                else:
                    bare = run_bare_loop(
                        config, modules, initial_mapper, iter_batches(open_train_reader(config, modules), num_steps)
                    )

                step_times, sizes = bare.step_times, bare.batch_sizes

                first_checks.append((which, bare))

            if sizes != expected_sizes:
                raise RuntimeError(f"`{which}` trained on other batches: sizes {sizes} != {expected_sizes}.")

            times[which].append(step_times[timed])

            log(f"  round {round_nr + 1} {which:<11} s/step: {' '.join(f'{t:.2f}' for t in step_times)}")

    if recipe_first is None or cached_first is None:
        raise RuntimeError("The recipe did not run.")

    for which, bare in first_checks:
        check_first_batch(which, bare.first_loss, bare.first_grad_norm, recipe_first)

    check_first_batch("recipe+cache", float(cached_first["Loss"]), float(cached_first["Gradient Norm"]), recipe_first)

    log(
        f"  first batch: loss recipe {float(recipe_first['Loss']):.6f}, bare {first_checks[0][1].first_loss:.6f}; "
        f"gradient norm recipe {float(recipe_first['Gradient Norm']):.6f}, bare {first_checks[0][1].first_grad_norm:.6f}"
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
    parser = ArgumentParser(description="The instruction-tuning recipe against a bare PyTorch loop, in one run.")
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

        log("[step time] instruct recipe vs bare loop")

        rows = measure_steps(assets, work_dir, **timing_options(args))

    return report(rows, args, start=start)


if __name__ == "__main__":
    sys.exit(main())
