"""Helpers of the tests, kept out of the installed package: the tiny COMET
checkpoint, the scores-file reader, and the runs of the resume and multi-rank
fault tests (``runs``) with their fault injector (``kill_at_step``).

The tests import them as ``helpers.<module>`` (pytest puts ``tests/`` on
``sys.path``)."""
