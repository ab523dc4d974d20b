"""The package's side of fairseq2's asset store: where generated assets and
their cards live (:mod:`.paths`), how a card file is written
(:mod:`.card_files`), and the card of a trained mapper (:mod:`.mapper_card`).

Nothing is re-exported here, so that the light modules stay light: the command
line's ``--help`` and ``prepare`` import :mod:`.paths` without fairseq2.
"""
