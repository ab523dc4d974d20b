"""The speech LLM of a recipe whose ``model`` section names a mapper card."""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.gang import Gang, ReduceOperation
from fairseq2.recipe.base import RecipeContext

from fairseq2_speechmapper.asset_store.mapper_card import MapperCard
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipe_support.data import SpeechDataset
from fairseq2_speechmapper.recipe_support.faults import reporting_model_load_errors
from fairseq2_speechmapper.speech_llm import SpeechLLM, SpeechLLMSection, load_speech_llm


def load_recipe_speech_llm(
    context: RecipeContext,
    mapper_card_name: str,
    section: SpeechLLMSection,
    dataset: SpeechDataset,
) -> tuple[SpeechLLM, Tokenizer, MapperCard]:
    """Puts the mapper fairseq2 loaded for the recipe (not yet wrapped for
    data parallelism) between the speech encoder and the LLM its card names; the speech encoder is
    not loaded when ``dataset`` is a feature cache."""
    # The mapper, speech encoder and LLM checkpoints: a damaged one is one line naming it.
    with reporting_model_load_errors():
        mapper = context.get_model_as(SpeechMapper)

        return load_speech_llm(
            context.asset_store.retrieve_card(mapper_card_name),
            section,
            mapper=mapper,
            unwrapped_mapper=mapper,
            device=context.gangs.root.device,
            feature_cache=dataset.feature_cache,
        )


def replicate_added_parameters(module: Module, gang: Gang) -> None:
    """Makes parameters added to the model after fairseq2 wrapped it for data
    parallelism (LoRA adapters, created once the LLM is known) replicas like
    DDP's own: rank 0's initial values on every rank, and each gradient
    averaged over ``gang`` as it is accumulated. DDP only reduces the
    parameters it held when it was built, and each rank's copy would drift."""
    if gang.size == 1:
        return

    def average(param: Tensor) -> None:
        if param.grad is not None:
            gang.all_reduce(param.grad, ReduceOperation.SUM)

            param.grad.div_(gang.size)

    for param in module.parameters():
        gang.broadcast(param.data, source_rank=0)

        if param.requires_grad:
            param.register_post_accumulate_grad_hook(average)
