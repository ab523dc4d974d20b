"""Stage 1: ``fairseq2 speechmapper pretrain``."""
