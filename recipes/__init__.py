"""SpeechMapper recipes, installed as ``fairseq2_speechmapper.recipes``."""
