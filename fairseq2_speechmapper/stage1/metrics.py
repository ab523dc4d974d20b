"""Stage-1 metrics: the loss pieces, how far the outputs' norms drift from the
embeddings', and the descriptors fairseq2 prints them with."""

from __future__ import annotations

import torch
from torch import Tensor

from fairseq2.metrics import Mean, MetricBag, Sum
from fairseq2.metrics.formatters import format_as_float, format_as_int
from fairseq2.metrics.recorders import MetricDescriptor
from fairseq2.runtime.dependency import DependencyContainer

from fairseq2_speechmapper.stage1.loss import Stage1LossOutput, sum_kept
from fairseq2_speechmapper.stage1.targets import EmbeddingTargets


def add_stage1_loss_metrics(bag: MetricBag, *, pad_distance: bool = True) -> None:
    """``pad_distance=False`` for a mapper that never has pad positions in
    training (one that integrates and fires): an always-zero mean would only
    print torcheval's "no calls to update()" warning at every publication."""
    add_stage1_distance_metrics(bag, loss_name="loss", pad_distance=pad_distance)

    bag.add("cosine", Mean())
    bag.add("norm_ratio", Mean())
    bag.add("num_examples", Sum())
    bag.add("num_bad_samples", Sum())


def add_stage1_distance_metrics(bag: MetricBag, *, loss_name: str, pad_distance: bool = True) -> None:
    """The stage-1 loss (as ``loss_name``), its distances and the skipped
    count: what stage 1 and instruction tuning with a stage-1 term share."""
    bag.add(loss_name, Mean())
    bag.add("word_distance", Mean())

    if pad_distance:
        bag.add("pad_distance", Mean())
    bag.add("num_skipped_too_long", Sum())


@torch.no_grad()
def update_stage1_loss_metrics(
    bag: MetricBag,
    output: Stage1LossOutput,
    outputs: Tensor,
    targets: EmbeddingTargets,
    *,
    num_bad_samples: int,
) -> None:
    num_kept = targets.num_kept

    update_stage1_distance_metrics(
        bag, output, targets.keep, num_kept, num_skipped=targets.num_skipped, loss_name="loss"
    )

    if num_kept > 0:
        bag.get("cosine", Mean).update(sum_kept(output.cosine, targets.keep) / num_kept, weight=num_kept)

        # Cosine ignores norms; this shows whether the outputs drift from the
        # embedding rows' scale (the paper's γ = 100 tends to let them).
        word_mask = targets.word_mask
        output_norms = torch.where(word_mask, outputs.detach().float().norm(dim=-1), 0.0)
        target_norms = torch.where(word_mask, targets.embeddings.float().norm(dim=-1), 0.0)
        bag.get("norm_ratio", Mean).update(
            output_norms.sum() / target_norms.sum().clamp(min=1e-8), weight=targets.num_word_positions
        )

    bag.get("num_examples", Sum).update(num_kept)
    bag.get("num_bad_samples", Sum).update(num_bad_samples)


@torch.no_grad()
def update_stage1_distance_metrics(
    bag: MetricBag, output: Stage1LossOutput, keep: Tensor, num_kept: int, *, num_skipped: int, loss_name: str
) -> None:
    """Updates the metrics of :func:`add_stage1_distance_metrics`; ``keep``
    marks the examples the loss kept, ``num_kept`` counts them on the host."""
    if num_kept > 0:
        # Masked sums and host counts: no value is read back from the device.
        bag.get(loss_name, Mean).update(sum_kept(output.loss, keep) / num_kept, weight=num_kept)
        bag.get("word_distance", Mean).update(sum_kept(output.word_distance, keep) / num_kept, weight=num_kept)

        if "pad_distance" in bag.metrics:
            bag.get("pad_distance", Mean).update(sum_kept(output.pad_distance, keep) / num_kept, weight=num_kept)

    bag.get("num_skipped_too_long", Sum).update(num_skipped)


def register_stage1_metric_descriptors(container: DependencyContainer) -> None:
    for descriptor in (
        MetricDescriptor("word_distance", "Word Distance", 91, format_as_float),
        MetricDescriptor("pad_distance", "Pad Distance", 92, format_as_float),
        MetricDescriptor("cosine", "Cosine", 93, format_as_float, higher_better=True),
        MetricDescriptor("norm_ratio", "Output/Target Norm", 94, format_as_float),
        MetricDescriptor("ter", "Token Error Rate", 95, format_as_float),
        MetricDescriptor("word_token_accuracy", "Word Token Accuracy", 96, format_as_float, higher_better=True),
        MetricDescriptor("pad_accuracy", "Pad Accuracy", 97, format_as_float, higher_better=True),
        MetricDescriptor("ctc_loss", "CTC Loss (Auxiliary)", 98, format_as_float),
        MetricDescriptor("fire_count_error", "Count Error (Integrate-and-Fire)", 99, format_as_float),
        MetricDescriptor("num_skipped_too_long", "Skipped (Transcript Too Long)", 800, format_as_int),
        MetricDescriptor("num_bad_samples", "Skipped (Bad Input)", 801, format_as_int),
    ):
        container.collection.register_instance(MetricDescriptor, descriptor)
