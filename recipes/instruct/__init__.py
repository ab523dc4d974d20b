"""Stage 2: ``fairseq2 speechmapper instruct``."""
