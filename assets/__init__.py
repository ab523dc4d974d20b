"""Asset cards of fairseq2-speechmapper, installed as ``fairseq2_speechmapper.cards``."""
