"""The stage-1 objective as library code: the targets (the LLM's embeddings of
the transcript with the pad rule), the loss, its metrics, embedding-space
decoding, and the assembly of SFM, mapper and targets from cards."""

from __future__ import annotations

from fairseq2_speechmapper.stage1.config import Stage1SpeechEncoderSection as Stage1SpeechEncoderSection
from fairseq2_speechmapper.stage1.config import TargetLLMSection as TargetLLMSection
from fairseq2_speechmapper.stage1.decoding import EmbeddingDecodingScorer as EmbeddingDecodingScorer
from fairseq2_speechmapper.stage1.decoding import NearestEmbeddingDecoder as NearestEmbeddingDecoder
from fairseq2_speechmapper.stage1.decoding import create_decoding_scorer as create_decoding_scorer
from fairseq2_speechmapper.stage1.decoding import finalize_decoding_metrics as finalize_decoding_metrics
from fairseq2_speechmapper.stage1.loss import EmbeddingRegressionLoss as EmbeddingRegressionLoss
from fairseq2_speechmapper.stage1.loss import Stage1LossOutput as Stage1LossOutput
from fairseq2_speechmapper.stage1.loss import Stage1LossSection as Stage1LossSection
from fairseq2_speechmapper.stage1.loss import create_stage1_loss as create_stage1_loss
from fairseq2_speechmapper.stage1.loss import sum_kept as sum_kept
from fairseq2_speechmapper.stage1.loss import sum_kept_loss as sum_kept_loss
from fairseq2_speechmapper.stage1.metrics import add_stage1_distance_metrics as add_stage1_distance_metrics
from fairseq2_speechmapper.stage1.metrics import add_stage1_loss_metrics as add_stage1_loss_metrics
from fairseq2_speechmapper.stage1.metrics import (
    register_stage1_metric_descriptors as register_stage1_metric_descriptors,
)
from fairseq2_speechmapper.stage1.metrics import update_stage1_distance_metrics as update_stage1_distance_metrics
from fairseq2_speechmapper.stage1.metrics import update_stage1_loss_metrics as update_stage1_loss_metrics
from fairseq2_speechmapper.stage1.model import Stage1Model as Stage1Model
from fairseq2_speechmapper.stage1.model import Stage1SetupError as Stage1SetupError
from fairseq2_speechmapper.stage1.model import TargetEmbeddings as TargetEmbeddings
from fairseq2_speechmapper.stage1.model import check_mapper_fits as check_mapper_fits
from fairseq2_speechmapper.stage1.model import load_stage1_model as load_stage1_model
from fairseq2_speechmapper.stage1.pad_token import PadTokenError as PadTokenError
from fairseq2_speechmapper.stage1.pad_token import decode_token as decode_token
from fairseq2_speechmapper.stage1.pad_token import resolve_pad_idx as resolve_pad_idx
from fairseq2_speechmapper.stage1.targets import EmbeddingTargets as EmbeddingTargets
from fairseq2_speechmapper.stage1.targets import build_embedding_targets as build_embedding_targets
from fairseq2_speechmapper.stage1.units import HypothesisSink as HypothesisSink
from fairseq2_speechmapper.stage1.units import Stage1EvalUnit as Stage1EvalUnit
