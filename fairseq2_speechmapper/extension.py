from __future__ import annotations

from typing import Final

from fairseq2.composition import (
    register_dataset_family,
    register_file_assets,
    register_model_family,
    register_package_assets,
)
from fairseq2.runtime.dependency import DependencyContainer

from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir
from fairseq2_speechmapper.datasets import (
    SPEECH_MANIFEST_FAMILY,
    SpeechManifestDataset,
    SpeechManifestDatasetConfig,
    open_speech_manifest_dataset,
)
from fairseq2_speechmapper.models.speechmapper import (
    SPEECHMAPPER_FAMILY,
    SpeechMapper,
    SpeechMapperConfig,
    apply_ac_to_speechmapper,
    apply_fsdp_to_speechmapper,
    compile_speechmapper,
    create_speechmapper_model,
    register_speechmapper_configs,
)
from fairseq2_speechmapper.models.w2vbert2 import register_w2vbert2_family

CARDS_PACKAGE: Final = "fairseq2_speechmapper.cards"
"""The package that holds the asset cards (the repository's ``assets/``)."""


class ExtensionState:
    """Records whether :func:`setup_fairseq2_extension` ran and how it ended.

    fairseq2 downgrades an extension's exception to a warning; the command line
    reads this record to fail loudly instead.
    """

    ran: bool = False
    error: BaseException | None = None


def setup_fairseq2_extension(container: DependencyContainer) -> None:
    """Registers SpeechMapper's families, architectures and asset cards (the
    ``fairseq2.extension`` entry point)."""
    ExtensionState.ran = True
    ExtensionState.error = None

    try:
        _register(container)
    except BaseException as ex:
        ExtensionState.error = ex

        raise


def _register(container: DependencyContainer) -> None:
    register_model_family(
        container,
        SPEECHMAPPER_FAMILY,
        kls=SpeechMapper,
        config_kls=SpeechMapperConfig,
        factory=create_speechmapper_model,
        compiler=compile_speechmapper,
        fsdp_applier=apply_fsdp_to_speechmapper,
        layerwise_ac_applier=apply_ac_to_speechmapper,
    )

    register_speechmapper_configs(container)

    register_w2vbert2_family(container)

    register_dataset_family(
        container,
        SPEECH_MANIFEST_FAMILY,
        SpeechManifestDataset,
        SpeechManifestDatasetConfig,
        opener=open_speech_manifest_dataset,
    )

    register_package_assets(container, CARDS_PACKAGE)

    # Cards of generated assets (tiny test models, converted demo models).
    register_file_assets(container, get_cache_cards_dir(), not_exist_ok=True)
