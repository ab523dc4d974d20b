from __future__ import annotations

from fairseq2.recipe.cli import main

from fairseq2_speechmapper.recipes.pretrain.recipe import PretrainRecipe

main(PretrainRecipe())
