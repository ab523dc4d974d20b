"""``fairseq2 speechmapper extract-features OUTPUT_DIR``: runs the frozen speech encoder
once over a speech manifest and stores its features in shards (see
:mod:`fairseq2_speechmapper.features.cache`), so that pretraining reads them
instead of running the speech encoder every epoch (paper: "speech encoder features can be computed
once and cached").

A fairseq2 inference recipe: ``--config``/``--config-file``, logs in
``OUTPUT_DIR/logs``, data parallel under ``torchrun`` (shard ``i`` goes to
rank ``i % world_size``). Running it again finishes what a killed run left:
finished shards are kept, and a directory holding features of another speech encoder,
layer, option or dtype is refused. With ``--config verify=true`` it checks
every shard against its checksums instead (one line naming a damaged shard,
exit code 2; extracting again repairs it).
"""

from __future__ import annotations

from typing import final

from typing_extensions import override

from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task

from fairseq2_speechmapper.features import FeatureCache, FeatureCacheHeader, card_checkpoint
from fairseq2_speechmapper.features.cache import dtype_name
from fairseq2_speechmapper.recipe_support.data import open_speech_dataset
from fairseq2_speechmapper.recipes.extract_features.config import ExtractFeaturesConfig
from fairseq2_speechmapper.recipes.extract_features.task import FeatureExtractionTask
from fairseq2_speechmapper.recipes.extract_features.verify import FeatureVerificationTask
from fairseq2_speechmapper.speech_encoders import WhisperSpeechEncoder, load_speech_encoder


@final
class ExtractFeaturesRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        pass

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(ExtractFeaturesConfig)

        gangs = context.gangs

        if config.verify:
            return FeatureVerificationTask(FeatureCache.open(context.output_dir), gangs=gangs)

        section = config.speech_encoder

        speech_encoder = load_speech_encoder(
            section.name,
            layer=section.layer,
            device=gangs.root.device,
            dtype=section.dtype,
            options=section.encoder_options(),
        )

        header = FeatureCacheHeader(
            speech_encoder=section.name,
            speech_encoder_checkpoint=card_checkpoint(context.asset_store.retrieve_card(section.name)),
            layer=speech_encoder.layer,
            last_layer=section.layer is None,
            # Only the options of the speech encoder's own family change its features.
            speech_encoder_options=(
                {"whisper_window": section.whisper_window} if isinstance(speech_encoder, WhisperSpeechEncoder) else {}
            ),
            speech_encoder_dtype=dtype_name(section.dtype),
            frame_average=config.storage.frame_average,
            dtype=dtype_name(config.storage.dtype),
            feature_dim=speech_encoder.output_dim,
        )

        return FeatureExtractionTask(
            context.output_dir,
            header,
            speech_encoder,
            open_speech_dataset(context, config.dataset),
            config.split_names,
            config.dataset,
            shard_size=config.storage.shard_size,
            gangs=gangs,
        )

    @property
    @override
    def config_kls(self) -> type[object]:
        return ExtractFeaturesConfig
