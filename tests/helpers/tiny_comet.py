"""A tiny random-weight COMET checkpoint in the layout of ``Unbabel/wmt22-comet-da``,
built offline, for tests of the COMET scoring path.

wmt22-comet-da is unbabel-comet's ``RegressionMetric`` on XLM-R large; here the
encoder is an XLM-R of a few thousand parameters with a character-level
Unigram tokenizer, saved with ``save_pretrained`` beside the checkpoint so that
COMET's ``XLMREncoder`` loads it by path instead of from the Hub. Its scores
mean nothing; they only go through the same code as the real model's.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Final

import torch
import yaml

TINY_COMET_CHECKPOINT: Final = Path("checkpoints") / "model.ckpt"
"""The checkpoint file under the model directory, as in COMET's Hub repositories."""

_SPECIAL_TOKENS: Final = ("<s>", "<pad>", "</s>", "<unk>")

# Enough to spell the test sentences of a few languages piece by piece; other
# characters become <unk>.
_CHARACTERS: Final = (
    string.ascii_letters
    + string.digits
    + string.punctuation
    + "äöüßàâçéèêëîïôûùÿñáíóú"
    + "我们你他是的在这个了不人有一"
)


def write_tiny_comet_checkpoint(model_dir: Path, *, seed: int = 0) -> Path:
    """Writes ``model_dir/checkpoints/model.ckpt``, ``model_dir/hparams.yaml``
    and the encoder in ``model_dir/encoder/``; returns the checkpoint file,
    which ``comet.load_from_checkpoint`` loads without network.

    The hparams name the encoder by its absolute path: move the directory and
    the checkpoint no longer loads.
    """
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from fairseq2_speechmapper.scoring.comet_metric import import_comet

    RegressionMetric = import_comet().models.RegressionMetric

    model_dir = model_dir.absolute()

    encoder_dir = model_dir / "encoder"

    tokenizer = _make_tokenizer()

    tokenizer.save_pretrained(encoder_dir)

    encoder_config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        # XLM-R's positions start after the pad index (1): 128 tokens + 2.
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )

    torch.manual_seed(seed)

    # Written for COMET's `XLMRobertaConfig.from_pretrained(encoder_dir)`; the
    # weights come from the COMET checkpoint.
    XLMRobertaModel(encoder_config, add_pooling_layer=False).config.save_pretrained(encoder_dir)

    # wmt22-comet-da's hparams, scaled down.
    model = RegressionMetric(
        nr_frozen_epochs=0.3,
        keep_embeddings_frozen=True,
        optimizer="AdamW",
        encoder_learning_rate=1.0e-06,
        learning_rate=1.5e-05,
        layerwise_decay=0.95,
        encoder_model="XLM-RoBERTa",
        pretrained_model=str(encoder_dir),
        pool="avg",
        layer="mix",
        layer_transformation="sparsemax",
        layer_norm=False,
        loss="mse",
        dropout=0.1,
        batch_size=16,
        hidden_sizes=[32, 16],
        activations="Tanh",
        final_activation=None,
        load_pretrained_weights=False,
        local_files_only=True,
    )

    hparams = dict(model.hparams)

    # As in the Hub's hparams.yaml: whether to load the encoder's weights is
    # the loader's choice (comet.load_from_checkpoint passes it).
    for loader_option in ("load_pretrained_weights", "local_files_only"):
        hparams.pop(loader_option, None)

    checkpoint_file = model_dir / TINY_COMET_CHECKPOINT

    checkpoint_file.parent.mkdir(parents=True, exist_ok=True)

    # What Lightning's `LightningModule.load_from_checkpoint` reads.
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": _lightning_version(),
    }

    torch.save(checkpoint, checkpoint_file)

    (model_dir / "hparams.yaml").write_text(yaml.safe_dump(hparams, sort_keys=True), encoding="utf-8")

    return checkpoint_file


def _make_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    # XLM-R's special tokens and ids (<s> 0, <pad> 1, </s> 2, <unk> 3; <mask> last).
    pieces = [(token, 0.0) for token in _SPECIAL_TOKENS]

    pieces += [("▁", -2.0)] + [(f"▁{c}", -3.0) for c in _CHARACTERS] + [(c, -4.0) for c in _CHARACTERS]

    pieces.append(("<mask>", 0.0))

    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=_SPECIAL_TOKENS.index("<unk>")))

    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )

    return XLMRobertaTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def _lightning_version() -> str:
    import pytorch_lightning

    return pytorch_lightning.__version__
