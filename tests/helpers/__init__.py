"""Helpers of the tests (and of ``benchmarks/``), kept out of the installed
package: the cache-less generation reference, the tiny COMET checkpoint, the
padding measure of bucketing and the scores-file reader.

The tests import them as ``helpers.<module>`` (pytest puts ``tests/`` on
``sys.path``); the benchmarks put ``tests/`` there themselves
(``benchmarks/common.py``)."""
