"""Stage-2 evaluation: ``fairseq2 speechmapper evaluate``."""
