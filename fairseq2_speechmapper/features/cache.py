"""The on-disk feature cache written by ``extract-features``.

Layout of a cache directory::

    cache.json                     what the features are: speech encoder card, checkpoint, layer,
                                   options, compute dtype, frame averaging, storage dtype
    splits/<split>/plan.json       the manifest records (hash), shard size and count
    splits/<split>/shard_NNNNN.safetensors
                                   one ``features`` tensor (frames, dim): the
                                   shard's utterances one after the other
    splits/<split>/shard_NNNNN.jsonl
                                   one line per utterance: id, source, duration,
                                   text, fields, offset and frames in the tensor
                                   and the CRC-32 of its features' bytes;
                                   written last, so it marks a finished shard

Shard ``i`` holds the manifest's utterances ``i*shard_size`` to
``(i+1)*shard_size - 1`` (in manifest order, after the duration limits) and is
written by rank ``i % world_size``. Every shard also carries the cache's
fingerprint, so that a shard of another speech encoder, layer or dtype is never read as
one of this cache, and the SHA-256 of its index: opening a split checks the
indices, reading an utterance checks its features, and
``extract-features --config verify=true`` (or extracting again) checks every
byte of every shard.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, final

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from fairseq2.assets import AssetCard
from fairseq2.data_type import DataType

from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.features.config import SpeechEncoderSection

CACHE_FORMAT: Final = "speechmapper-feature-cache"

CACHE_VERSION: Final = 2
"""2: shards carry checksums."""

HEADER_FILE: Final = "cache.json"

PLAN_FILE: Final = "plan.json"

FEATURES_KEY: Final = "features"

INDEX_CHECKSUM_KEY: Final = "index_sha256"


class FeatureCacheError(SpeechMapperError):
    """A feature cache cannot be used: missing, incomplete, corrupt, or made
    with another speech encoder, layer, option or dtype than asked for."""


def feature_checksum(features: Tensor) -> str:
    """The CRC-32 of a tensor's bytes, as stored: it finds accidental damage
    (flipped bits, a bad copy) at 2-3 times SHA-256's speed, checked on every
    read of the features."""
    return f"{zlib.crc32(features.contiguous().view(torch.uint8).numpy().data):08x}"


def text_checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def speech_encoder_setting(key: str) -> str:
    """Where pretraining and ``extract-features`` set a speech encoder field."""
    return f"`speech_encoder.{key}`"


def dtype_name(dtype: DataType) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> DataType:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise FeatureCacheError(f"`{name}` is not a torch dtype.")

    return dtype


@final
@dataclass(kw_only=True, frozen=True)
class FeatureCacheHeader:
    """What the cached features are; two caches with equal headers hold
    interchangeable features."""

    speech_encoder: str
    """The speech encoder's asset card."""

    speech_encoder_checkpoint: str | None
    """The checkpoint the card pointed at during extraction."""

    layer: int
    """The (1-based) speech encoder layer the features come from."""

    last_layer: bool
    """``True`` if ``layer`` was asked for as the last layer (``layer: null``)."""

    speech_encoder_options: dict[str, str]
    """The options of the speech encoder's family that change its features (Whisper's window)."""

    speech_encoder_dtype: str
    """The speech encoder's compute dtype."""

    frame_average: int
    """Consecutive speech encoder frames averaged into one stored frame."""

    dtype: str
    """The storage dtype."""

    feature_dim: int

    @property
    def fingerprint(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True).encode()

        return hashlib.sha256(payload).hexdigest()[:16]

    @property
    def storage_dtype(self) -> DataType:
        return parse_dtype(self.dtype)

    def describe(self) -> str:
        options = "".join(f", {k}={v}" for k, v in sorted(self.speech_encoder_options.items()))

        return (
            f"`{self.speech_encoder}` layer {self.layer}{' (last)' if self.last_layer else ''}{options}, "
            f"computed in {self.speech_encoder_dtype}, {self.frame_average} frame(s) averaged, stored as {self.dtype}"
        )

    def mismatches(
        self,
        section: SpeechEncoderSection,
        *,
        checkpoint: str | None,
        setting: Callable[[str], str] = speech_encoder_setting,
    ) -> list[str]:
        """Says how the features asked for by ``section`` (whose card now points at
        ``checkpoint``) differ from these; empty if they do not. ``setting``
        names where the user sets each of ``section``'s fields."""
        problems = []

        if section.name != self.speech_encoder:
            problems.append(f"its speech encoder is `{self.speech_encoder}`, not `{section.name}` ({setting('name')})")
        elif checkpoint != self.speech_encoder_checkpoint:
            problems.append(
                f"the `{section.name}` card now points at checkpoint {checkpoint}, but the cache was extracted from {self.speech_encoder_checkpoint}"
            )

        if section.layer is None:
            if not self.last_layer:
                problems.append(
                    f"it holds layer {self.layer}, but the last layer is asked for ({setting('layer')} is null); set it to {self.layer} if that is the last layer"
                )
        elif section.layer != self.layer:
            problems.append(f"it holds layer {self.layer}, not layer {section.layer} ({setting('layer')})")

        options = {"whisper_window": section.whisper_window}

        for key, value in sorted(self.speech_encoder_options.items()):
            if options.get(key) != value:
                problems.append(
                    f"it was extracted with `{key}={value}`, not `{key}={options.get(key)}` ({setting(key)})"
                )

        if dtype_name(section.dtype) != self.speech_encoder_dtype:
            problems.append(
                f"the speech encoder ran in {self.speech_encoder_dtype}, not {dtype_name(section.dtype)} ({setting('dtype')})"
            )

        return problems

    def to_json(self) -> dict[str, object]:
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "fingerprint": self.fingerprint, **asdict(self)}

    @staticmethod
    def from_json(data: object, *, where: Path) -> FeatureCacheHeader:
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise FeatureCacheError(f"{where}: not a SpeechMapper feature cache header.")

        if data.get("version") != CACHE_VERSION:
            raise FeatureCacheError(
                f"{where}: the cache has format version {data.get('version')}, but this version of fairseq2-speechmapper reads version {CACHE_VERSION} (shards with checksums); extract the features again, into another directory."
            )

        fields = {k: v for k, v in data.items() if k not in ("format", "version", "fingerprint")}

        try:
            return FeatureCacheHeader(**fields)
        except TypeError as ex:
            raise FeatureCacheError(f"{where}: the cache header is not valid ({ex}).") from None


@final
@dataclass(kw_only=True, frozen=True)
class SplitPlan:
    """How a split is cut into shards; fixed when its extraction starts."""

    split: str

    manifest: str

    records_sha256: str
    """The hash of the manifest's utterances (after the duration limits), in order."""

    num_utterances: int

    audio_seconds: float

    min_duration: float

    max_duration: float

    shard_size: int

    @property
    def num_shards(self) -> int:
        return -(-self.num_utterances // self.shard_size)

    def shards_of_rank(self, rank: int, world_size: int) -> range:
        return range(rank, self.num_shards, world_size)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "num_shards": self.num_shards}

    @staticmethod
    def from_json(data: object, *, where: Path) -> SplitPlan:
        if not isinstance(data, dict):
            raise FeatureCacheError(f"{where}: the split plan is not valid.")

        fields = {k: v for k, v in data.items() if k != "num_shards"}

        try:
            return SplitPlan(**fields)
        except TypeError as ex:
            raise FeatureCacheError(f"{where}: the split plan is not valid ({ex}).") from None


def card_checkpoint(card: AssetCard) -> str | None:
    """The checkpoint a card points at (through its base cards)."""
    checkpoint = card.maybe_get_field("checkpoint")

    return None if checkpoint is None else str(checkpoint.value)


def hash_examples(examples: Iterable[dict[str, object]]) -> str:
    digest = hashlib.sha256()

    for example in examples:
        digest.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode())

        digest.update(b"\n")

    return digest.hexdigest()


def shard_name(shard_idx: int) -> str:
    return f"shard_{shard_idx:05d}"


@final
@dataclass(kw_only=True)
class FeatureCacheSplit:
    """A finished split: its utterances as reader examples."""

    plan: SplitPlan

    directory: Path

    examples: list[dict[str, object]] = field(default_factory=list)
    """Per utterance, in manifest order: ``id``, ``duration``, ``text``,
    ``source``, ``fields`` (JSON), ``shard`` (the features file), ``offset``
    and ``frames``; for a bad utterance skipped at extraction, ``error`` (why,
    naming its manifest line and file) instead of the last three."""


@final
class FeatureCache:
    """A feature cache directory."""

    def __init__(self, directory: Path, header: FeatureCacheHeader) -> None:
        self.directory = directory
        self.header = header

    @staticmethod
    def open(directory: Path) -> FeatureCache:
        header_file = directory / HEADER_FILE

        if not header_file.is_file():
            raise FeatureCacheError(
                f"{directory}: not a feature cache (no {HEADER_FILE}); write one with `fairseq2 speechmapper extract-features {directory}`."
            )

        return FeatureCache(directory, FeatureCacheHeader.from_json(read_json(header_file), where=header_file))

    def split_dir(self, split: str) -> Path:
        return self.directory / "splits" / split

    @property
    def splits(self) -> list[str]:
        splits_dir = self.directory / "splits"

        return sorted(p.name for p in splits_dir.iterdir() if (p / PLAN_FILE).is_file()) if splits_dir.is_dir() else []

    def read_plan(self, split: str) -> SplitPlan | None:
        plan_file = self.split_dir(split) / PLAN_FILE

        return SplitPlan.from_json(read_json(plan_file), where=plan_file) if plan_file.is_file() else None

    def finished_shards(self, split: str) -> set[int]:
        """The shards whose index is written (checked by :meth:`read_split`)."""
        directory = self.split_dir(split)

        if not directory.is_dir():
            return set()

        return {int(p.stem.removeprefix("shard_")) for p in directory.glob("shard_*.jsonl")}

    def read_split(self, split: str) -> FeatureCacheSplit:
        """Reads the index of a finished split, checking that every shard is
        there, belongs to this cache and holds the frames its index lists."""
        plan = self.read_plan(split)
        if plan is None:
            raise FeatureCacheError(
                f"{self.directory}: the cache has no `{split}` split (it has: {', '.join(self.splits) or 'none'}); extract it with `extract-features` and `splits=[{split}]`."
            )

        directory = self.split_dir(split)

        missing = sorted(set(range(plan.num_shards)) - self.finished_shards(split))
        if missing:
            raise FeatureCacheError(
                f"{directory}: {len(missing)} of {plan.num_shards} shards are not extracted yet (first: {shard_name(missing[0])}); run `extract-features {self.directory}` again to finish them."
            )

        cache_split = FeatureCacheSplit(plan=plan, directory=directory)

        for shard_idx in range(plan.num_shards):
            cache_split.examples.extend(self._read_shard_index(directory, shard_idx))

        return cache_split

    def shard_problem(self, split: str, shard_idx: int, *, verify: bool = False) -> str | None:
        """Why a finished shard cannot be read (a truncated or damaged file, a
        shard of another cache), or ``None``. Checks the files' structure and
        the index's checksum; with ``verify``, every byte of the features too."""
        try:
            examples = self._read_shard_index(self.split_dir(split), shard_idx)

            if verify:
                self._verify_features(examples)
        except FeatureCacheError as ex:
            return str(ex)

        return None

    def _verify_features(self, examples: list[dict[str, object]]) -> None:
        examples = [e for e in examples if "error" not in e]

        if not examples:
            return

        features_file = str(examples[0]["shard"])

        try:
            with safe_open(features_file, framework="pt") as shard:
                features = shard.get_tensor(FEATURES_KEY)
        except (OSError, SafetensorError) as ex:
            raise FeatureCacheError(
                f"{features_file}: cannot be read as a feature shard ({ex}); run `extract-features {self.directory}` again to extract it anew."
            ) from None

        for example in examples:
            offset, frames = int(example["offset"]), int(example["frames"])  # type: ignore[call-overload]

            problem = checksum_problem(example, features[offset : offset + frames], self.directory)
            if problem is not None:
                raise FeatureCacheError(problem)

    def shard_size(self, split: str, shard_idx: int) -> int:
        """The bytes of a shard's files on disk."""
        name = shard_name(shard_idx)

        return sum((self.split_dir(split) / f"{name}{suffix}").stat().st_size for suffix in (".jsonl", ".safetensors"))

    def remove_shard(self, split: str, shard_idx: int) -> None:
        """Removes a shard, its index first: a kill in between leaves it unfinished, not damaged."""
        name = shard_name(shard_idx)

        for suffix in (".jsonl", ".safetensors"):
            (self.split_dir(split) / f"{name}{suffix}").unlink(missing_ok=True)

    def _read_shard_index(self, directory: Path, shard_idx: int) -> list[dict[str, object]]:
        name = shard_name(shard_idx)

        index_file, features_file = directory / f"{name}.jsonl", directory / f"{name}.safetensors"

        try:
            index = index_file.read_text(encoding="utf-8")

            entries = [json.loads(line) for line in index.splitlines() if line]

            num_indexed_frames = sum(int(e["frames"]) for e in entries)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as ex:
            raise FeatureCacheError(
                f"{index_file}: not a valid shard index ({ex}); run `extract-features {self.directory}` again to extract the shard anew."
            ) from None

        num_frames, metadata = read_shard_header(features_file)

        fingerprint = metadata.get("fingerprint")

        if fingerprint != self.header.fingerprint:
            raise FeatureCacheError(
                f"{features_file}: the shard belongs to another feature cache (fingerprint {fingerprint}, this cache's is {self.header.fingerprint}); features of another speech encoder, layer or dtype are never mixed: run `extract-features {self.directory}` again to extract it anew."
            )

        if num_frames != num_indexed_frames:
            raise FeatureCacheError(
                f"{features_file}: holds {num_frames} frames, but its index lists {num_indexed_frames}; run `extract-features {self.directory}` again to extract the shard anew."
            )

        if metadata.get(INDEX_CHECKSUM_KEY) != text_checksum(index):
            raise FeatureCacheError(
                f"{index_file}: the index does not match the checksum its shard carries (a damaged file); run `extract-features {self.directory}` again to extract the shard anew."
            )

        return [_reader_example(e, features_file) for e in entries]


def _reader_example(entry: dict[str, object], features_file: Path) -> dict[str, object]:
    example = {
        "id": entry["id"],
        "duration": entry["duration"],
        "text": entry["text"],
        "source": entry["source"],
        "fields": json.dumps(entry["fields"], ensure_ascii=False),
    }

    # A bad utterance skipped at extraction: no features, its error instead.
    if "error" in entry:
        return {**example, "error": entry["error"]}

    return {
        **example,
        "shard": str(features_file),
        "offset": entry["offset"],
        "frames": entry["frames"],
        "crc32": entry["crc32"],
    }


def checksum_problem(example: dict[str, object], features: Tensor, directory: Path) -> str | None:
    """Why ``features``, read for ``example``, are not the ones written, or ``None``."""
    if feature_checksum(features) == example["crc32"]:
        return None

    return f"{example['shard']}: the features of {example['source']} do not match their checksum (a damaged shard); run `extract-features {directory}` again to extract it anew."


def read_shard_header(features_file: Path) -> tuple[int, dict[str, str]]:
    """The number of frames of a shard and the metadata it was written with."""
    try:
        with safe_open(str(features_file), framework="pt") as shard:
            metadata = shard.metadata() or {}

            shape = shard.get_slice(FEATURES_KEY).get_shape()
    except (OSError, SafetensorError) as ex:
        raise FeatureCacheError(
            f"{features_file}: cannot be read as a feature shard ({ex}); run `extract-features` on its cache again to extract it anew."
        ) from None

    return int(shape[0]), metadata


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as ex:
        raise FeatureCacheError(f"{path}: not valid JSON ({ex.msg}).") from None
