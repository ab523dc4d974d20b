"""The mapper a recipe's ``model`` section describes, loaded by fairseq2."""

from __future__ import annotations

from fairseq2.assets import AssetCardError
from fairseq2.recipe.base import RecipeContext

from fairseq2_speechmapper.errors import SpeechMapperError, describe_error_chain
from fairseq2_speechmapper.models.speechmapper import SpeechMapper


class RecipeModelError(SpeechMapperError):
    """The mapper card's checkpoint cannot be loaded into the model the card
    describes."""


def get_recipe_mapper(context: RecipeContext) -> SpeechMapper:
    """The recipe's mapper (not wrapped for data parallelism).

    fairseq2's recipe command line reports a checkpoint that does not fit its
    card (an :class:`AssetCardError`) with a traceback, and a recipe cannot
    register a handler of its own (fairseq2 registers its handlers after the
    recipe's), so it is raised again here as one line naming the checkpoint.
    """
    try:
        return context.get_model_as(SpeechMapper)
    except AssetCardError as ex:
        raise RecipeModelError(describe_error_chain(ex)) from None
