"""Helpers of the tests (and of ``benchmarks/``), kept out of the installed
package: the cache-less generation reference, the tiny COMET checkpoint, the
padding measure of bucketing, the scores-file reader, and the runs of the resume
and multi-rank fault tests (``runs``) with their fault injector (``kill_at_step``).

The tests import them as ``helpers.<module>`` (pytest puts ``tests/`` on
``sys.path``); the benchmarks put ``tests/`` there themselves
(``benchmarks/common.py``)."""
