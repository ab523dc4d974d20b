"""The stage-2 train and validation units: speech → frozen speech encoder → mapper →
chat prompt → frozen LLM → cross-entropy of the response."""

from __future__ import annotations

import random
from typing import final

import torch
from torch import Tensor
from typing_extensions import override

from fairseq2.evaluator import EvalUnit
from fairseq2.metrics import Mean, MetricBag, Sum
from fairseq2.trainer import TrainUnit

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard
from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss, InstructLossOutput
from fairseq2_speechmapper.speech_llm import InstructionBuilder, SpeechLLM, SpeechTask, TaskExample
from fairseq2_speechmapper.stage1 import (
    add_stage1_distance_metrics,
    build_embedding_targets,
    update_stage1_distance_metrics,
)


def add_instruct_metrics(bag: MetricBag, *, with_stage1: bool) -> None:
    bag.add("loss", Mean())
    bag.add("nll_loss", Mean())
    bag.add("accuracy", Mean())
    bag.add("num_examples", Sum())
    bag.add("num_response_tokens", Sum())
    bag.add("num_asr_batches", Sum())
    bag.add("num_bad_samples", Sum())

    if with_stage1:
        add_stage1_distance_metrics(bag, loss_name="stage1_loss")


@torch.no_grad()
def update_instruct_metrics(bag: MetricBag, output: InstructLossOutput, batch: SpeechBatch, *, asr_batch: bool) -> None:
    num_tokens = output.num_response_tokens

    bag.get("loss", Mean).update(output.loss.detach() / num_tokens, weight=num_tokens)
    bag.get("nll_loss", Mean).update(output.ce_sum / num_tokens, weight=num_tokens)
    bag.get("accuracy", Mean).update(output.num_correct_tokens / num_tokens, weight=num_tokens)

    stage1, kept, num_kept = output.stage1, output.stage1_keep, output.stage1_num_kept
    if stage1 is not None and kept is not None:
        update_stage1_distance_metrics(
            bag, stage1, kept, num_kept, num_skipped=batch.num_examples - num_kept, loss_name="stage1_loss"
        )

    bag.get("num_examples", Sum).update(batch.num_examples)
    bag.get("num_response_tokens", Sum).update(num_tokens)
    bag.get("num_asr_batches", Sum).update(int(asr_batch))
    bag.get("num_bad_samples", Sum).update(batch.num_bad_samples)


def compute_instruct_loss(
    model: SpeechLLM,
    builder: InstructionBuilder,
    loss: InstructLoss,
    batch: SpeechBatch,
    examples: list[TaskExample],
    *,
    pad_idx: int,
) -> InstructLossOutput:
    mapped = model.map_speech(batch)

    prefixes = model.build_prefixes(mapped, [builder.speech_prompt(e.instruction) for e in examples])

    responses = [model.chat_template.response_ids(e.response) for e in examples]

    response_logits = model.response_logits(prefixes, responses)

    if loss.sigma == 0.0:
        return loss(response_logits)

    # In the LLM's dtype (no float32 copy of the table): the loss casts the
    # looked-up rows to the mapper output's dtype.
    targets = build_embedding_targets(batch.target_ids, mapped.lens, model.embedding_table, pad_idx)

    return loss(response_logits, mapped.outputs, targets)


@final
class InstructUnit(TrainUnit[SpeechBatch]):
    def __init__(
        self,
        model: SpeechLLM,
        builder: InstructionBuilder,
        loss: InstructLoss,
        guard: NonFiniteStepGuard,
        *,
        task: SpeechTask,
        asr_mix_prob: float,
        pad_idx: int,
        seed: int,
    ) -> None:
        self._model = model
        self._builder = builder
        self._loss = loss
        self._task = task
        self._asr_mix_prob = asr_mix_prob
        self._pad_idx = pad_idx
        self._seed = seed
        self._rng = random.Random(seed)
        self._guard = guard

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_instruct_metrics(metric_bag, with_stage1=self._loss.sigma > 0.0)

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        asr_batch = self._task == "asr" or self._rng.random() < self._asr_mix_prob

        examples = self._builder.examples(batch, "asr" if asr_batch else self._task, self._rng)

        output = compute_instruct_loss(self._model, self._builder, self._loss, batch, examples, pad_idx=self._pad_idx)

        self._guard.observe_loss(output.loss, batch)

        update_instruct_metrics(metric_bag, output, batch, asr_batch=asr_batch)

        return output.loss, output.num_response_tokens

    @override
    def set_step_nr(self, step_nr: int) -> None:
        # A resumed run draws the same tasks and wordings as an unbroken one.
        self._rng.seed(self._seed * 1_000_003 + step_nr)

        self._guard.begin_step(step_nr)


@final
class InstructEvalUnit(EvalUnit[SpeechBatch]):
    """Teacher-forced cross-entropy and token accuracy of the responses, with
    each task's first instruction wording."""

    def __init__(
        self, model: SpeechLLM, builder: InstructionBuilder, loss: InstructLoss, *, task: SpeechTask, pad_idx: int
    ) -> None:
        self._model = model
        self._builder = builder
        self._loss = loss
        self._task = task
        self._pad_idx = pad_idx

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_instruct_metrics(metric_bag, with_stage1=self._loss.sigma > 0.0)

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> None:
        examples = self._builder.examples(batch, self._task, rng=None)

        output = compute_instruct_loss(self._model, self._builder, self._loss, batch, examples, pad_idx=self._pad_idx)

        update_instruct_metrics(metric_bag, output, batch, asr_batch=self._task == "asr")
