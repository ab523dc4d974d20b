"""Checks every byte of a feature cache against the checksums its shards
carry (``extract-features --config verify=true``)."""

from __future__ import annotations

import time

from fairseq2.logging import log

from fairseq2_speechmapper.features.cache import FeatureCache, FeatureCacheError


def verify_feature_cache(cache: FeatureCache, *, rank: int = 0, world_size: int = 1) -> int:
    """Verifies rank ``rank``'s finished shards (shard ``i`` is rank
    ``i % world_size``'s) of every split; returns how many. Raises one line
    naming the first damaged shard (extracting again repairs it)."""
    problems: list[str] = []

    num_shards, num_bytes, start_time = 0, 0, time.perf_counter()

    for split in cache.splits:
        plan = cache.read_plan(split)
        if plan is None:
            continue

        finished = cache.finished_shards(split)

        shards = [i for i in plan.shards_of_rank(rank, world_size) if i in finished]

        split_problems = [p for i in shards if (p := cache.shard_problem(split, i, verify=True)) is not None]

        problems.extend(split_problems)

        num_shards += len(shards)

        num_bytes += sum(cache.shard_size(split, i) for i in shards)

        log.info(
            "Split `{}`: verified {} shard(s) of rank {} of {}: {} damaged; {} of {} not extracted yet.",
            split,
            len(shards),
            rank,
            world_size,
            len(split_problems),
            plan.num_shards - len(finished),
            plan.num_shards,
        )

    elapsed = time.perf_counter() - start_time

    log.info(
        "Verified {:.1f} MB in {:.2f} s ({:.0f} MB/s).", num_bytes / 1e6, elapsed, num_bytes / 1e6 / max(elapsed, 1e-9)
    )

    if problems:
        more = f" ({len(problems)} damaged shards in all)" if len(problems) > 1 else ""

        raise FeatureCacheError(f"{problems[0]}{more}")

    return num_shards
