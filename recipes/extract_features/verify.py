"""``extract-features --config verify=true``: checks a feature cache against
the checksums its shards carry, without loading the speech encoder."""

from __future__ import annotations

from typing import final

from typing_extensions import override

from fairseq2.gang import Gangs
from fairseq2.task import Task

from fairseq2_speechmapper.features.cache import FeatureCache
from fairseq2_speechmapper.features.verify import verify_feature_cache


@final
class FeatureVerificationTask(Task):
    """``extract-features --config verify=true``: checks this rank's shards
    against their checksums (see :func:`verify_feature_cache`)."""

    def __init__(self, cache: FeatureCache, *, gangs: Gangs) -> None:
        self._cache = cache
        self._gangs = gangs
        self._step_nr = 0

    @override
    def run(self) -> None:
        self._step_nr = verify_feature_cache(self._cache, rank=self._gangs.root.rank, world_size=self._gangs.root.size)

    @override
    def request_stop(self) -> None:
        pass

    @property
    @override
    def step_nr(self) -> int:
        return self._step_nr

    @override
    def close(self) -> None:
        pass
