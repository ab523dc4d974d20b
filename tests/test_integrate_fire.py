"""The mapper's integrate-and-fire option (``fire_block``): one output per
token, in time order; the count given in training, the rounded sum of the
firing weights otherwise."""

from __future__ import annotations

import math

import pytest
import torch

from fairseq2.nn import BatchLayout, Linear

from fairseq2_speechmapper.models.speechmapper import (
    create_speechmapper_model,
    get_speechmapper_model_hub,
    tiny_speechmapper_config,
)
from fairseq2_speechmapper.models.speechmapper.config import SpeechMapperConfig, fire_after_block
from fairseq2_speechmapper.models.speechmapper.model import SpeechMapperIntegrateAndFire
from fairseq2_speechmapper.stage1.firing import fire_count_errors


def _constant_weight_fire(weight: float) -> SpeechMapperIntegrateAndFire:
    proj = Linear(1, 1, bias=True)

    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.fill_(math.log(weight / (1.0 - weight)))

    return SpeechMapperIntegrateAndFire(proj)


def test_each_output_integrates_one_unit_of_weight_in_time_order() -> None:
    fire = _constant_weight_fire(0.3)

    # Frame t holds the value t; the second sequence is padded after 6 frames.
    seqs = torch.arange(10, dtype=torch.float32).view(1, 10, 1).repeat(2, 1, 1)
    layout = BatchLayout.of(seqs, [10, 6])

    fired, fired_layout, weight_sums = fire(seqs, layout, [4, 2])

    assert fired_layout.seq_lens == [4, 2]
    assert weight_sums.tolist() == pytest.approx([3.0, 1.8])

    # Rescaled to the count, every output integrates a weight of exactly 1:
    # with all-ones frames each output is 1.
    ones_fired, _, _ = fire(torch.ones_like(seqs), layout, [4, 2])

    assert ones_fired[0, :4, 0].tolist() == pytest.approx([1.0] * 4)
    assert ones_fired[1, :2, 0].tolist() == pytest.approx([1.0] * 2)
    assert ones_fired[1, 2:].abs().sum() == 0.0

    # Uniform weights: output k is the weighted mean of the k-th quarter of the
    # frames (frame 2 splits its weight between outputs 0 and 1).
    assert fired[0, :4, 0].tolist() == pytest.approx([0.8, 3.2, 5.8, 8.2], abs=1e-4)
    assert fired[1, :2, 0].tolist() == pytest.approx([1.0, 4.0], abs=1e-4)


def test_without_counts_the_rounded_weight_sum_is_the_length() -> None:
    fire = _constant_weight_fire(0.3)

    seqs = torch.ones(3, 10, 1)
    layout = BatchLayout.of(seqs, [10, 7, 1])

    # 3.0, 2.1 and 0.3 (at least one output).
    _, fired_layout, _ = fire(seqs, layout, None)

    assert fired_layout.seq_lens == [3, 2, 1]


def test_the_loss_reaches_the_firing_weights() -> None:
    fire = _constant_weight_fire(0.3)

    seqs = torch.randn(2, 10, 1)
    layout = BatchLayout.of(seqs, [10, 8])

    fired, _, weight_sums = fire(seqs, layout, [3, 2])

    (fired.square().sum() + fire_count_errors(weight_sums, [torch.ones(2), torch.ones(1)]).sum()).backward()

    assert fire.weight_proj.weight.grad is not None and fire.weight_proj.weight.grad.abs().sum() > 0.0


def _tiny_cif_config() -> SpeechMapperConfig:
    return fire_after_block(tiny_speechmapper_config(), 0)


def test_a_mapper_that_fires_gives_one_output_per_token_in_training() -> None:
    config = _tiny_cif_config()

    assert not config.validate().has_error()

    mapper = create_speechmapper_model(config)

    seqs = torch.randn(2, 80, config.input_dim)
    layout = BatchLayout.of(seqs, [80, 50])

    mapper.train()

    outputs, outputs_layout = mapper(seqs, layout, target_counts=[7, 3])

    assert outputs.shape == (2, 7, config.llm_dim) and outputs_layout.seq_lens == [7, 3]
    assert mapper.pop_fire_weight_sums().shape == (2,)

    with pytest.raises(RuntimeError, match="no integrate-and-fire weights"):
        mapper.pop_fire_weight_sums()

    mapper.eval()

    # Evaluation ignores the counts: the weights decide.
    _, eval_layout = mapper(seqs, layout, target_counts=[7, 3])

    with torch.no_grad():
        block_outputs, _ = mapper.blocks[0](*mapper._average_frames(seqs, layout))

        weights = torch.sigmoid(mapper.integrate_fire.weight_proj(block_outputs))  # type: ignore[union-attr]

    assert eval_layout.seq_lens[0] == max(1, round(float(weights[0, :, 0].sum())))

    with pytest.raises(ValueError, match="depends on the audio"):
        mapper.output_lengths(torch.tensor([80]))


def test_blocks_after_the_firing_one_must_not_downsample() -> None:
    config = tiny_speechmapper_config()

    config.fire_block = 0

    errors = " ".join(config.validate().errors)

    assert "`blocks[1]` comes after `fire_block`" in errors

    config.fire_block = 2

    assert "`fire_block` must be the index of a block" in " ".join(config.validate().errors)


@pytest.mark.parametrize("arch", ["small_cif", "small_cif_ctc"])
def test_the_registered_firing_mappers_fire_after_their_first_block(arch: str) -> None:
    hub = get_speechmapper_model_hub()

    mapper = hub.create_new_model(hub.get_arch_config(arch), device=torch.device("cpu"))

    assert mapper.integrates_and_fires and mapper.fire_block == 0
    assert (mapper.ctc_head is not None) == (arch == "small_cif_ctc")

    # Whisper's 50 Hz into 12.5 Hz frames, then one vector per token.
    assert mapper.downsampling_factor == 4

    features = torch.randn(2, 200, 384)

    mapper.train()

    outputs, layout = mapper(features, BatchLayout.of(features, [200, 120]), target_counts=[9, 4])

    assert outputs.shape == (2, 9, 576) and layout.seq_lens == [9, 4]
