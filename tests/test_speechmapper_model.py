from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairseq2.assets import get_asset_store
from fairseq2.models import load_model
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.cli.tiny_assets import TINY_MAPPER_CARD
from fairseq2_speechmapper.models.speechmapper import (
    SpeechMapper,
    SpeechMapperConfig,
    get_speechmapper_model_hub,
)


def count_parameters_from_config(config: SpeechMapperConfig) -> int:
    """Counts the parameters of the mapper described in the paper from its
    dimensions alone, independently of the module code."""

    def linear(in_dim: int, out_dim: int) -> int:
        return in_dim * out_dim + out_dim

    def layer_norm(dim: int) -> int:
        return 2 * dim

    total = 0

    input_dim = config.input_dim

    for block in config.blocks:
        m = block.model_dim

        total += input_dim * m * block.conv_kernel_size + m  # Conv1d
        attention = 4 * linear(m, m)
        ffn = linear(m, block.ffn_inner_dim) + linear(block.ffn_inner_dim, m)
        total += block.num_layers * (attention + ffn + 2 * layer_norm(m))
        total += layer_norm(m)  # final norm of the pre-norm stack
        total += linear(m, block.output_dim)

        input_dim = block.output_dim

    if config.final_proj_hidden_dim is None:
        total += linear(input_dim, config.llm_dim)
    else:
        total += linear(input_dim, config.final_proj_hidden_dim)
        total += linear(config.final_proj_hidden_dim, config.llm_dim)

    return total


def create_mapper(arch: str, *, meta: bool = False) -> SpeechMapper:
    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config(arch)

    return hub.create_new_model(config, device=torch.device("cpu"), meta=meta)


@pytest.mark.parametrize(
    ("arch", "llm_dim", "expected_millions"),
    [
        ("paper_llama3_8b", 4096, 277.0),
        ("paper_eurollm_9b", 4096, 277.0),
        ("paper_qwen3_4b", 2560, 260.5),
        ("tiny", 64, 0.427),
    ],
)
def test_arch_builds_with_expected_parameter_count(arch: str, llm_dim: int, expected_millions: float) -> None:
    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config(arch)

    model = create_mapper(arch, meta=True)

    num_params = sum(p.numel() for p in model.parameters())

    assert num_params == count_parameters_from_config(config)
    assert num_params / 1e6 == pytest.approx(expected_millions, rel=0.05)
    assert model.llm_dim == llm_dim


def test_paper_arch_counts_277m_and_downsamples_8x() -> None:
    model = create_mapper("paper_llama3_8b", meta=True)

    assert sum(p.numel() for p in model.parameters()) == 277_038_080

    # 50 Hz w2v-BERT frames -> 6.25 Hz: one vector per 160 ms.
    lengths = model.output_lengths(torch.tensor([5000]))

    assert 5000 / int(lengths) == pytest.approx(8.0, rel=0.01)
    assert model.downsampling_factor == 8


def test_forward_returns_output_lengths_for_padded_batch() -> None:
    model = create_mapper("tiny").eval()

    seq_lens = [100, 37, model.min_input_len]

    seqs, layout = pad_seqs([torch.randn(n, model.input_dim) for n in seq_lens])

    with torch.no_grad():
        output, output_layout = model(seqs, layout)

    expected_lens = model.output_lengths(torch.tensor(seq_lens)).tolist()

    assert output_layout.seq_lens == expected_lens
    assert expected_lens[2] == 1
    assert output.shape == (3, max(expected_lens), model.llm_dim)

    # Padded output positions are zero.
    for row, n in enumerate(expected_lens):
        assert torch.count_nonzero(output[row, n:]) == 0
        assert torch.count_nonzero(output[row, :n]) > 0


def test_padding_never_changes_real_outputs() -> None:
    torch.manual_seed(0)

    model = create_mapper("tiny").eval()

    short = torch.randn(41, model.input_dim)
    long = torch.randn(120, model.input_dim)

    with torch.no_grad():
        alone, alone_layout = model(short.unsqueeze(0), BatchLayout.of(short.unsqueeze(0)))

        # Garbage in the padding must not leak into real positions either.
        seqs, layout = pad_seqs([short, long], pad_value=1000)

        batched, batched_layout = model(seqs, layout)

    n = alone_layout.seq_lens[0]

    assert batched_layout.seq_lens[0] == n

    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_too_short_input_gives_clear_error() -> None:
    model = create_mapper("tiny").eval()

    assert model.output_lengths(torch.tensor([model.min_input_len - 1])).item() < 1

    seqs = torch.randn(1, model.min_input_len - 1, model.input_dim)

    with pytest.raises(ValueError, match=f"at least {model.min_input_len} frames"):
        model(seqs, BatchLayout.of(seqs))


def test_wrong_feature_width_gives_clear_error() -> None:
    model = create_mapper("tiny").eval()

    seqs = torch.randn(1, 50, model.input_dim + 1)

    with pytest.raises(ValueError, match=f"expects {model.input_dim}-dimensional"):
        model(seqs, BatchLayout.of(seqs))


def test_save_load_through_hub_round_trips_bit_exactly(tmp_path: Path) -> None:
    torch.manual_seed(1)

    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config("tiny")

    model = hub.create_new_model(config, device=torch.device("cpu"))

    checkpoint_file = tmp_path / "mapper.pt"

    torch.save(model.state_dict(), checkpoint_file)

    loaded = hub.load_custom_model(checkpoint_file, config, device=torch.device("cpu"))

    state_dict = model.state_dict()
    loaded_state_dict = loaded.state_dict()

    assert state_dict.keys() == loaded_state_dict.keys()

    for key, tensor in state_dict.items():
        assert torch.equal(tensor, loaded_state_dict[key]), key

    seqs = torch.randn(2, 60, config.input_dim)

    with torch.no_grad():
        expected, _ = model.eval()(seqs, BatchLayout.of(seqs))
        actual, _ = loaded.eval()(seqs, BatchLayout.of(seqs))

    assert torch.equal(expected, actual)


def test_mapper_card_loads_its_checkpoint_bit_exactly() -> None:
    card = get_asset_store().retrieve_card(TINY_MAPPER_CARD)

    checkpoint_file = Path(card.field("checkpoint").as_(str))

    model = load_model(TINY_MAPPER_CARD, device=torch.device("cpu"))

    assert isinstance(model, SpeechMapper)

    saved = torch.load(checkpoint_file, weights_only=True)

    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def test_slam_asr_connector_stacks_five_frames_into_a_two_layer_mlp() -> None:
    model = create_mapper("slam_asr_small").eval()

    # Whisper's 50 Hz -> 10 Hz, as SLAM-ASR's projector.
    assert model.downsampling_factor == 5
    assert [len(block.encoder.layers) for block in model.blocks] == [0]

    features = torch.randn(2, 100, 384)

    outputs, layout = model(features, BatchLayout.of(features, [100, 52]))

    assert outputs.shape == (2, 20, 576)
    assert layout.seq_lens == [20, 10]

    # Frame 7 changes output 1 (frames 5-9) and no other.
    changed = features.clone()
    changed[0, 7] += 1.0

    delta = (model(changed, BatchLayout.of(changed, [100, 52]))[0] - outputs).abs().sum(dim=-1)

    assert delta[0, 1] > 0.0
    assert delta[0, [0, 2, 3]].sum() == 0.0 and delta[1].sum() == 0.0


def test_ctc_head_runs_in_training_only_and_its_loss_learns_a_batch() -> None:
    from fairseq2_speechmapper.stage1.ctc import BatchVocabularyCTCLoss

    torch.manual_seed(0)

    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config("tiny")
    config.ctc_block = 0

    model = hub.create_new_model(config, device=torch.device("cpu"))

    assert model.ctc_head is not None

    embedding_table = torch.randn(50, config.llm_dim)

    features = torch.randn(2, 120, config.input_dim)
    layout = BatchLayout.of(features, [120, 90])

    target_ids = [torch.tensor([3, 7, 7, 12]), torch.tensor([40, 3])]

    ctc = BatchVocabularyCTCLoss(embedding_table)

    # In eval mode (validation, generation) the head is not run.
    model.eval()
    model(features, layout)

    with pytest.raises(RuntimeError, match="no CTC states"):
        model.pop_ctc_states()

    model.train()

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    losses = []

    for _ in range(200):
        model(features, layout)

        loss = ctc(model, target_ids)

        assert loss.shape == (2,)

        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()

        losses.append(float(loss.detach().sum()))

    assert losses[-1] < 0.05 * losses[0], losses[::20]

    # Greedy CTC decoding of the memorised batch gives its transcripts back.
    model(features, layout)

    states, states_layout = model.pop_ctc_states()

    vocab = torch.unique(torch.cat(target_ids))

    best = model.ctc_head.logits(states, embedding_table[vocab]).argmax(dim=-1)

    for i, ids in enumerate(target_ids):
        path = best[i, : states_layout.seq_lens[i]].tolist()

        collapsed = [p for j, p in enumerate(path) if (j == 0 or p != path[j - 1]) and p != vocab.numel()]

        assert vocab[collapsed].tolist() == ids.tolist()
