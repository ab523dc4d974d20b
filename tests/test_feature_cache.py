"""The speech encoder feature cache on tiny random-weight models: ``extract-features``
(in process and through the command line), pretraining and instruction tuning
from the cache (the same losses as on the fly, mismatched caches refused),
resuming a killed extraction, two ranks under torchrun, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from safetensors import safe_open

from fairseq2.assets import get_asset_store
from fairseq2.data.tokenizers import Tokenizer
from fairseq2.datasets import DataReader
from fairseq2.gang import create_fake_gangs
from fairseq2.models import load_model
from fairseq2.recipe import run
from fairseq2.recipe.config import RegimeSection
from fairseq2.utils.validation import ValidationError

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_MAPPER_CARD, TINY_SPEECH_ENCODER_CARD
from fairseq2_speechmapper.datasets import (
    BadSampleError,
    SpeechBatch,
    SpeechManifestDataset,
    SpeechManifestDatasetConfig,
    SpeechReadOptions,
)
from fairseq2_speechmapper.features import (
    FeatureCache,
    FeatureCacheDataset,
    FeatureCacheError,
    SpeechEncoderFeatures,
    check_frame_average,
    verify_feature_cache,
)
from fairseq2_speechmapper.models.speechmapper import SpeechMapper, get_speechmapper_model_hub
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.recipe_support.data import create_split_reader
from fairseq2_speechmapper.recipes.evaluate.config import SpeechEvalConfig
from fairseq2_speechmapper.recipes.evaluate.recipe import SpeechEvalRecipe
from fairseq2_speechmapper.recipes.evaluate_stage1.config import Stage1EvalConfig
from fairseq2_speechmapper.recipes.evaluate_stage1.recipe import Stage1EvalRecipe
from fairseq2_speechmapper.recipes.extract_features.config import ExtractFeaturesConfig
from fairseq2_speechmapper.recipes.extract_features.recipe import ExtractFeaturesRecipe
from fairseq2_speechmapper.recipes.instruct.config import InstructConfig, InstructTaskSection
from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss
from fairseq2_speechmapper.recipes.instruct.recipe import InstructRecipe
from fairseq2_speechmapper.recipes.instruct.units import compute_instruct_loss
from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig
from fairseq2_speechmapper.recipes.pretrain.recipe import PretrainRecipe
from fairseq2_speechmapper.speech_llm import InstructionBuilder, SpeechLLMSection, SpeechTaskSection, load_speech_llm
from fairseq2_speechmapper.stage1 import (
    Stage1LossSection,
    Stage1SpeechEncoderSection,
    TargetLLMSection,
    create_stage1_loss,
    load_stage1_model,
    sum_kept_loss,
)

CPU = torch.device("cpu")

VENV_BIN = Path(sys.executable).parent

SENTENCES = ["hello world", "the cat sat", "a red boat", "good morning", "blue sky", "one two three"]

TRANSLATIONS = ["hallo welt", "die katze sass", "ein rotes boot", "guten morgen", "blauer himmel", "eins zwei drei"]

NUM_TRAIN, NUM_DEV = 8, 2


def _write_corpus(corpus_dir: Path) -> None:
    rng = np.random.default_rng(0)

    corpus_dir.mkdir(parents=True, exist_ok=True)

    for split, count in (("train", NUM_TRAIN), ("dev", NUM_DEV)):
        entries = []

        for i in range(count):
            seconds = 1.0 + 0.25 * (i % 3)

            audio = corpus_dir / f"{split}_{i}.wav"

            soundfile.write(audio, (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)

            entries.append(
                {
                    "audio_filepath": audio.name,
                    "duration": seconds,
                    "text": SENTENCES[i % len(SENTENCES)],
                    "translation": TRANSLATIONS[i % len(TRANSLATIONS)],
                    "tgt_lang": "de",
                }
            )

        (corpus_dir / f"{split}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")


def _dataset_section(corpus_dir: Path) -> SpeechDatasetSection:
    return SpeechDatasetSection(
        name=None,
        manifest_dir=corpus_dir,
        train_split="train",
        valid_split="dev",
        max_duration=4.0,
        max_batch_seconds=6.0,
        max_batch_size=4,
        sort_window=8,
        num_parallel_calls=1,
    )


def _extract(output_dir: Path, corpus_dir: Path, *, shard_size: int = 3, **storage: object) -> FeatureCache:
    """Runs the extraction recipe in this process."""
    config = ExtractFeaturesConfig()

    config.speech_encoder.name = TINY_SPEECH_ENCODER_CARD
    config.speech_encoder.layer = 2
    config.dataset = _dataset_section(corpus_dir)
    config.storage = replace(config.storage, shard_size=shard_size, **storage)  # type: ignore[arg-type]
    config.common.metric_recorders.tensorboard.enabled = False

    run(ExtractFeaturesRecipe(), config, output_dir, no_rich=True)

    return FeatureCache.open(output_dir)


def _env(cache_dir: Path) -> dict[str, str]:
    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "FAIRSEQ2_NO_PROGRESS": "1"}

    env.pop("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", None)

    return env


def _extract_command(output_dir: Path, corpus_dir: Path, *extra: str) -> list[str]:
    return [
        "speechmapper",
        "extract-features",
        str(output_dir),
        "--no-rich",
        "--config",
        f"speech_encoder.name={TINY_SPEECH_ENCODER_CARD}",
        "speech_encoder.layer=2",
        "dataset.name=null",
        f"dataset.manifest_dir={corpus_dir}",
        "dataset.train_split=train",
        "dataset.valid_split=dev",
        # As `_dataset_section`: the duration limits are part of the split's plan.
        "dataset.max_duration=4.0",
        "dataset.max_batch_seconds=6.0",
        "dataset.max_batch_size=4",
        "dataset.sort_window=8",
        "dataset.num_parallel_calls=1",
        "storage.shard_size=2",
        *extra,
    ]


def _manifest_sources(corpus_dir: Path, split: str, count: int) -> list[str]:
    return [f"{corpus_dir / f'{split}.jsonl'}:{line}" for line in range(1, count + 1)]


def _index(cache_dir: Path, split: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for index_file in sorted((cache_dir / "splits" / split).glob("shard_*.jsonl"))
        for line in index_file.read_text(encoding="utf-8").splitlines()
    ]


def _shard_states(cache_dir: Path) -> dict[str, tuple[int, int]]:
    """Each finished shard file's inode and modification time."""
    return {
        str(p.relative_to(cache_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted((cache_dir / "splits").glob("*/shard_*"))
        if p.suffix in (".jsonl", ".safetensors")
    }


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus")

    _write_corpus(path)

    return path


@pytest.fixture(scope="module")
def fp16_cache(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FeatureCache:
    return _extract(tmp_path_factory.mktemp("cache") / "fp16", corpus_dir)


def test_extraction_writes_shards_with_an_index_covering_the_manifest(
    fp16_cache: FeatureCache, corpus_dir: Path
) -> None:
    header = fp16_cache.header

    assert (header.speech_encoder, header.layer, header.last_layer) == (TINY_SPEECH_ENCODER_CARD, 2, False)
    assert (header.dtype, header.speech_encoder_dtype, header.frame_average, header.feature_dim) == (
        "float16",
        "float32",
        1,
        64,
    )

    train = _index(fp16_cache.directory, "train")

    # 8 utterances in shards of 3, in manifest order, with the manifest's other fields.
    assert sorted(p.name for p in fp16_cache.split_dir("train").glob("shard_*")) == [
        f"shard_0000{i}.{ext}" for i in range(3) for ext in ("jsonl", "safetensors")
    ]
    assert [e["source"] for e in train] == _manifest_sources(corpus_dir, "train", NUM_TRAIN)
    assert train[0]["text"] == "hello world" and train[0]["fields"] == {"translation": "hallo welt", "tgt_lang": "de"}

    for entry in train:
        with safe_open(str(fp16_cache.split_dir("train") / str(entry["shard"])), framework="pt") as shard:
            features = shard.get_slice("features")[int(entry["offset"]) : int(entry["offset"]) + int(entry["frames"])]  # type: ignore[call-overload]

            assert shard.metadata()["fingerprint"] == header.fingerprint

        # wav2vec2: frames of 400 samples every 320.
        assert features.shape == ((round(float(entry["duration"]) * 16_000) - 400) // 320 + 1, 64)  # type: ignore[arg-type]
        assert features.dtype == torch.float16

    assert len(_index(fp16_cache.directory, "dev")) == NUM_DEV


def _cache_section(cache: FeatureCache, **changes: object) -> SpeechDatasetSection:
    """The dataset section reading ``cache`` (no manifest)."""
    return replace(_dataset_section(Path("unused")), manifest_dir=None, feature_cache=cache.directory, **changes)  # type: ignore[arg-type]


def _assert_same_losses(
    expected: list[tuple[list[str], torch.Tensor]], actual: list[tuple[list[str], torch.Tensor]], *, tol: float
) -> None:
    """The same batches (ids) with the same losses, within ``tol``."""
    for (ids, loss), (actual_ids, actual_loss) in zip(expected, actual):
        assert actual_ids == ids
        torch.testing.assert_close(actual_loss, loss, rtol=tol, atol=tol)


@pytest.fixture
def speech_encoder_never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if the speech encoder is loaded (its features are meant to come from the cache)."""
    import fairseq2_speechmapper.features.speech_encoder as stage1_module

    def no_speech_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("the speech encoder is loaded although its features are cached")

    monkeypatch.setattr(stage1_module, "load_speech_encoder", no_speech_encoder)


def _train_reader(
    corpus_dir: Path, cache: FeatureCache | None, features: SpeechEncoderFeatures, tokenizer: Tokenizer
) -> DataReader[SpeechBatch]:
    """The training split as the recipes read it: the manifests (speech encoder on the
    fly) or ``cache``."""
    dataset = (
        FeatureCacheDataset(cache)
        if cache is not None
        else SpeechManifestDataset.from_config(SpeechManifestDatasetConfig(manifest_dir=corpus_dir))
    )

    return create_split_reader(
        dataset,
        "train",
        _dataset_section(corpus_dir),
        features,
        tokenizer,
        create_fake_gangs(CPU),
        training=True,
        seed=2,
    )


def _next_batch(reader: DataReader[SpeechBatch]) -> SpeechBatch:
    """The next training batch; at a pass's end, the first of the next (the
    trainer resets the reader there)."""
    try:
        (batch,) = next(reader)
    except StopIteration:
        reader.reset()

        (batch,) = next(reader)

    return batch


def _first_losses(
    corpus_dir: Path, cache: FeatureCache | None, mapper: SpeechMapper, *, num_batches: int
) -> list[tuple[list[str], torch.Tensor]]:
    """The ids and stage-1 losses of the first training batches, read from
    the manifests (speech encoder on the fly) or from ``cache``."""
    model, targets, tokenizer = load_stage1_model(
        Stage1SpeechEncoderSection(name=TINY_SPEECH_ENCODER_CARD, layer=2),
        TargetLLMSection(name=TINY_LLAMA_CARD),
        mapper=mapper,
        unwrapped_mapper=mapper,
        device=CPU,
        feature_cache=cache,
    )

    reader = _train_reader(corpus_dir, cache, model.speech_encoder, tokenizer)

    loss_fn = create_stage1_loss(Stage1LossSection())

    losses = []

    with torch.no_grad():
        for _ in range(num_batches):
            batch = _next_batch(reader)

            outputs, output_lens = model(batch)

            batch_targets = targets(batch.target_ids, output_lens)

            loss, num_kept = sum_kept_loss(loss_fn(outputs, batch_targets), batch_targets)

            losses.append((batch.ids, loss / num_kept))

    return losses


@pytest.fixture(scope="module")
def mapper() -> SpeechMapper:
    hub = get_speechmapper_model_hub()

    torch.manual_seed(0)

    return hub.create_new_model(hub.get_arch_config("tiny"), device=CPU, dtype=torch.float32).eval()


def test_cached_and_on_the_fly_pretraining_give_the_same_loss(
    fp16_cache: FeatureCache, corpus_dir: Path, mapper: SpeechMapper, tmp_path: Path
) -> None:
    on_the_fly = _first_losses(corpus_dir, None, mapper, num_batches=3)

    # float16 storage: the features' rounding (2^-11 relative) moves the loss a little.
    _assert_same_losses(on_the_fly, _first_losses(corpus_dir, fp16_cache, mapper, num_batches=3), tol=5e-3)

    # float32 storage, averaged over the mapper's 2 frames: equal up to the
    # float noise of batching the speech encoder differently.
    assert mapper.frame_average == 2

    fp32_cache = _extract(tmp_path / "fp32", corpus_dir, dtype=torch.float32, frame_average=2)

    assert fp32_cache.header.dtype == "float32"

    _assert_same_losses(on_the_fly, _first_losses(corpus_dir, fp32_cache, mapper, num_batches=3), tol=1e-5)


@pytest.mark.usefixtures("speech_encoder_never_loaded")
def test_pretrain_recipe_trains_and_validates_from_the_cache_without_the_speech_encoder(
    cache_dir: Path, fp16_cache: FeatureCache, tmp_path: Path
) -> None:
    config = PretrainConfig()

    config.model.arch = "tiny"
    config.speech_encoder = Stage1SpeechEncoderSection(name=TINY_SPEECH_ENCODER_CARD, layer=2)
    config.llm = TargetLLMSection(name=TINY_LLAMA_CARD)
    # No manifest: the index has the transcripts and the other fields.
    config.dataset = _cache_section(fp16_cache)
    config.trainer.mixed_precision.mode = "off"
    config.regime = RegimeSection(
        num_steps=2, validate_every_n_steps=2, checkpoint_every_n_steps=2, publish_metrics_every_n_steps=2
    )
    config.common.no_sweep_dir = True
    config.common.metric_recorders.tensorboard.enabled = False

    output_dir = tmp_path / "cached_run"

    run(PretrainRecipe(), config, output_dir, no_rich=True)

    valid = json.loads((output_dir / "metrics" / "valid.jsonl").read_text().splitlines()[-1])

    assert valid["Number of Examples"] == NUM_DEV
    assert "Token Error Rate" in valid

    # The mapper card names the speech encoder layer the cache holds.
    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_cached_run.yaml").read_text())

    assert (card["speech_encoder"], card["speech_encoder_layer"]) == (TINY_SPEECH_ENCODER_CARD, 2)


def test_cache_of_another_speech_encoder_layer_or_dtype_is_refused(
    fp16_cache: FeatureCache, mapper: SpeechMapper
) -> None:
    def load(section: Stage1SpeechEncoderSection) -> None:
        load_stage1_model(
            section,
            TargetLLMSection(name=TINY_LLAMA_CARD),
            mapper=mapper,
            unwrapped_mapper=mapper,
            device=CPU,
            feature_cache=fp16_cache,
        )

    load(Stage1SpeechEncoderSection(name=TINY_SPEECH_ENCODER_CARD, layer=2))

    cases = {
        "it holds layer 2, not layer 1 (`speech_encoder.layer`)": Stage1SpeechEncoderSection(
            name=TINY_SPEECH_ENCODER_CARD, layer=1
        ),
        "it holds layer 2, but the last layer is asked for": Stage1SpeechEncoderSection(
            name=TINY_SPEECH_ENCODER_CARD, layer=None
        ),
        f"its speech encoder is `{TINY_SPEECH_ENCODER_CARD}`, not `w2vbert2_600m`": Stage1SpeechEncoderSection(
            name="w2vbert2_600m", layer=2
        ),
        "the speech encoder ran in float32, not bfloat16": Stage1SpeechEncoderSection(
            name=TINY_SPEECH_ENCODER_CARD, layer=2, dtype=torch.bfloat16
        ),
    }

    for message, section in cases.items():
        with pytest.raises(FeatureCacheError, match="the feature cache does not hold the features") as info:
            load(section)

        assert message in str(info.value)


def test_pretraining_from_a_cache_of_another_layer_fails_with_one_line(
    cache_dir: Path, fp16_cache: FeatureCache, tmp_path: Path
) -> None:
    config = {
        "model": {"family": "speechmapper", "arch": "tiny"},
        "speech_encoder": {"name": TINY_SPEECH_ENCODER_CARD, "layer": 1},
        "llm": {"name": TINY_LLAMA_CARD},
        "dataset": {
            "name": None,
            "feature_cache": str(fp16_cache.directory),
            "train_split": "train",
            "valid_split": None,
        },
        "regime": {"num_steps": 2},
        "common": {"no_sweep_dir": True, "metric_recorders": {"tensorboard": {"enabled": False}}},
    }

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    command = [
        str(VENV_BIN / "fairseq2"),
        "speechmapper",
        "pretrain",
        str(tmp_path / "out"),
        "--config-file",
        str(config_file),
        "--no-rich",
    ]

    result = subprocess.run(command, capture_output=True, text=True, env=_env(cache_dir), timeout=300, check=False)

    assert result.returncode == 2
    assert (
        f"{fp16_cache.directory}: the feature cache does not hold the features `speech_encoder` asks for: it holds layer 2, not layer 1 (`speech_encoder.layer`)."
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_killed_extraction_resumes_without_redoing_finished_shards(
    cache_dir: Path, corpus_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    output_dir = tmp_path / "cache"

    # SIGKILL in the middle of writing the third shard (after its temporary
    # features file, before the rename): the worst moment for a kill.
    killer = (
        "import os, signal, sys\n"
        "import fairseq2_speechmapper.features.writer as extract\n"
        "from fairseq2_speechmapper.cli import main\n"
        "write, calls = extract.write_file_atomically, []\n"
        "def write_then_die(path, write_file):\n"
        "    calls.append(path)\n"
        "    if len(calls) == 5:\n"
        "        write_file(path.with_name(path.name + '.tmp'))\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    write(path, write_file)\n"
        "extract.write_file_atomically = write_then_die\n"
        "main(sys.argv[1:])\n"
    )

    killed = subprocess.run(
        [sys.executable, "-c", killer, *_extract_command(output_dir, corpus_dir)],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=300,
        check=False,
    )

    assert killed.returncode == -9, killed.stderr[-3000:]

    train_dir = output_dir / "splits" / "train"

    assert (train_dir / "shard_00002.safetensors.tmp").is_file()
    assert FeatureCache.open(output_dir).finished_shards("train") == {0, 1}

    finished = _shard_states(output_dir)

    # An unfinished split is refused, not read in part.
    with pytest.raises(FeatureCacheError, match="2 of 4 shards are not extracted yet"):
        FeatureCache.open(output_dir).read_split("train")

    capfd.readouterr()

    # The same extraction again (in this process, to save a start-up).
    _extract(output_dir, corpus_dir, shard_size=2)

    log = capfd.readouterr().err

    assert "Split `train`: 4 shard(s) of 2 utterances, 4 for rank 0 of 1, 2 of them already extracted." in log

    train_log = log.split("Split `dev`: 1 shard(s)")[0]

    assert "wrote shard_00000" not in train_log and "wrote shard_00001" not in train_log
    assert "wrote shard_00002" in train_log and "wrote shard_00003" in train_log

    # The finished shards are the very same files; the rest are written.
    states = _shard_states(output_dir)

    assert {k: states[k] for k in finished} == finished
    assert not list(train_dir.glob("*.tmp"))

    assert [e["source"] for e in _index(output_dir, "train")] == _manifest_sources(corpus_dir, "train", NUM_TRAIN)

    # Printed at the end: the size per audio hour, measured and per dtype.
    assert "MB per audio hour." in log
    assert "Features per audio hour by storage dtype: float16" in log


@pytest.mark.slow
def test_two_ranks_write_disjoint_shards_covering_the_manifest_once(
    cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "cache"

    command = [
        str(VENV_BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        "29529",
        "-m",
        "fairseq2_speechmapper",
        *_extract_command(output_dir, corpus_dir),
    ]

    result = subprocess.run(command, capture_output=True, text=True, env=_env(cache_dir), timeout=600, check=False)

    assert result.returncode == 0, result.stderr[-3000:]

    for split, count in (("train", NUM_TRAIN), ("dev", NUM_DEV)):
        writers: dict[int, set[str]] = {0: set(), 1: set()}

        for shard_file in sorted((output_dir / "splits" / split).glob("shard_*.safetensors")):
            with safe_open(str(shard_file), framework="pt") as shard:
                writers[int(shard.metadata()["rank"])].add(shard_file.stem)

        # Shard i is written by rank i % 2: the ranks' shards are disjoint.
        assert writers[0] == {f"shard_{i:05d}" for i in range(0, count // 2, 2)}
        assert writers[1] == {f"shard_{i:05d}" for i in range(1, count // 2, 2)}

        # Each rank's log names exactly the shards it wrote.
        for rank in (0, 1):
            log = (output_dir / "logs" / f"rank_{rank}.log").read_text(encoding="utf-8")

            logged = {
                line.split("wrote ")[1].split(" ")[0] for line in log.splitlines() if f"Split `{split}`: wrote" in line
            }

            assert logged == writers[rank]

        # Together they cover the manifest, each utterance once.
        assert [e["source"] for e in _index(output_dir, split)] == _manifest_sources(corpus_dir, split, count)

    # The whole cache reads back as one.
    assert len(FeatureCache.open(output_dir).read_split("train").examples) == NUM_TRAIN


def test_extracting_into_a_cache_of_other_features_is_refused(fp16_cache: FeatureCache, corpus_dir: Path) -> None:
    with pytest.raises(
        FeatureCacheError, match="features of another speech encoder, layer, option or dtype are never mixed"
    ):
        _extract(fp16_cache.directory, corpus_dir, dtype=torch.float32)


def test_frame_average_must_divide_the_mappers(fp16_cache: FeatureCache, mapper: SpeechMapper) -> None:
    header = replace(fp16_cache.header, frame_average=3)

    with pytest.raises(FeatureCacheError, match="averaged over 3 frames, but the mapper averages 2"):
        check_frame_average(FeatureCache(fp16_cache.directory, header), mapper_frame_average=mapper.frame_average)

    check_frame_average(FeatureCache(fp16_cache.directory, replace(header, frame_average=2)), mapper_frame_average=4)


def test_bad_audio_stops_extraction_or_is_skipped_and_counted(corpus_dir: Path, tmp_path: Path) -> None:
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()

    (bad_dir / "noise.wav").write_bytes(b"not audio at all" * 100)

    entries = [json.loads(line) for line in (corpus_dir / "train.jsonl").read_text().splitlines()[:3]]

    for entry in entries:
        entry["audio_filepath"] = str(corpus_dir / entry["audio_filepath"])

    entries[1]["audio_filepath"] = str(bad_dir / "noise.wav")

    (bad_dir / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    (bad_dir / "dev.jsonl").write_text(json.dumps(entries[0]) + "\n")

    with pytest.raises(
        BadSampleError, match=f"{bad_dir / 'train.jsonl'}:2: {bad_dir / 'noise.wav'}: cannot be decoded as audio"
    ):
        _extract(tmp_path / "strict", bad_dir)

    config = ExtractFeaturesConfig()

    config.speech_encoder.name = TINY_SPEECH_ENCODER_CARD
    config.speech_encoder.layer = 2
    config.dataset = replace(_dataset_section(bad_dir), on_bad_sample="skip")
    config.common.metric_recorders.tensorboard.enabled = False

    run(ExtractFeaturesRecipe(), config, tmp_path / "lenient", no_rich=True)

    cache_split = FeatureCache.open(tmp_path / "lenient").read_split("train")

    assert [e["source"] for e in cache_split.examples if "error" not in e] == [
        f"{bad_dir / 'train.jsonl'}:1",
        f"{bad_dir / 'train.jsonl'}:3",
    ]

    # Listed with its error, so readers of the cache skip and count it (or stop at it) as readers of the audio do.
    (bad,) = [e for e in cache_split.examples if "error" in e]

    assert str(bad["error"]).startswith(f"{bad_dir / 'train.jsonl'}:2: {bad_dir / 'noise.wav'}: cannot be decoded")

    with safe_open(str(cache_split.directory / "shard_00000.safetensors"), framework="pt") as shard:
        assert shard.metadata()["num_bad_samples"] == "1"


def test_a_missing_cache_and_a_foreign_shard_are_clear_errors(fp16_cache: FeatureCache, tmp_path: Path) -> None:
    with pytest.raises(
        FeatureCacheError, match="not a feature cache .*write one with `fairseq2 speechmapper extract-features"
    ):
        FeatureCache.open(tmp_path / "nothing")

    with pytest.raises(FeatureCacheError, match="the cache has no `test` split"):
        fp16_cache.read_split("test")

    # A shard of another cache copied in is caught by its fingerprint.
    foreign = tmp_path / "foreign"

    shutil.copytree(fp16_cache.directory, foreign)

    header = json.loads((foreign / "cache.json").read_text())
    header["layer"], header["fingerprint"] = 1, "0"
    (foreign / "cache.json").write_text(json.dumps(header))

    with pytest.raises(FeatureCacheError, match="the shard belongs to another feature cache"):
        FeatureCache.open(foreign).read_split("train")


def _first_instruct_losses(
    corpus_dir: Path, cache: FeatureCache | None, *, num_batches: int
) -> list[tuple[list[str], torch.Tensor]]:
    """The ids and stage-2 losses (speech translation, CE+MSE) of the first
    training batches of the tiny speech LLM, its speech encoder run on the audio or its
    features read from ``cache``."""
    mapper = load_model(TINY_MAPPER_CARD, device=CPU, dtype=torch.float32)

    assert isinstance(mapper, SpeechMapper)

    mapper.eval()

    model, tokenizer, info = load_speech_llm(
        get_asset_store().retrieve_card(TINY_MAPPER_CARD),
        SpeechLLMSection(),
        mapper=mapper,
        unwrapped_mapper=mapper,
        device=CPU,
        feature_cache=cache,
    )

    reader = _train_reader(corpus_dir, cache, model.speech_encoder, tokenizer)

    builder = InstructionBuilder(model, InstructTaskSection(task="st"))

    loss = InstructLoss(sigma=0.5, stage1_loss=create_stage1_loss(Stage1LossSection()))

    pad_idx = info.pad_idx(tokenizer)

    losses = []

    with torch.no_grad():
        for _ in range(num_batches):
            batch = _next_batch(reader)

            examples = builder.examples(batch, "st", rng=None)

            assert [e.response for e in examples] == [f["translation"] for f in batch.fields]

            output = compute_instruct_loss(model, builder, loss, batch, examples, pad_idx=pad_idx)

            losses.append((batch.ids, output.loss / output.num_response_tokens))

    return losses


def test_cached_and_on_the_fly_instruction_tuning_give_the_same_loss(
    fp16_cache: FeatureCache, corpus_dir: Path, tmp_path: Path
) -> None:
    on_the_fly = _first_instruct_losses(corpus_dir, None, num_batches=3)

    # float32 storage: equal up to the float noise of batching the speech encoder differently.
    fp32_cache = _extract(tmp_path / "fp32", corpus_dir, dtype=torch.float32)

    _assert_same_losses(on_the_fly, _first_instruct_losses(corpus_dir, fp32_cache, num_batches=3), tol=1e-5)

    _assert_same_losses(on_the_fly, _first_instruct_losses(corpus_dir, fp16_cache, num_batches=3), tol=5e-3)


@pytest.mark.usefixtures("speech_encoder_never_loaded")
def test_instruct_and_evaluate_read_the_cache_without_the_speech_encoder(
    cache_dir: Path, fp16_cache: FeatureCache, tmp_path: Path
) -> None:
    dataset = _cache_section(fp16_cache)

    config = InstructConfig()

    config.model.name = TINY_MAPPER_CARD
    config.task = InstructTaskSection(task="st")
    config.loss.sigma = 0.5
    config.dataset = dataset
    config.trainer.mixed_precision.mode = "off"
    config.regime = RegimeSection(
        num_steps=2, validate_every_n_steps=2, checkpoint_every_n_steps=2, publish_metrics_every_n_steps=2
    )
    config.common.no_sweep_dir = True
    config.common.metric_recorders.tensorboard.enabled = False

    run(InstructRecipe(), config, tmp_path / "cached_it", no_rich=True)

    valid = json.loads((tmp_path / "cached_it" / "metrics" / "valid.jsonl").read_text().splitlines()[-1])

    assert valid["Number of Examples"] == NUM_DEV
    assert "NLL Loss" in valid and "Stage-1 Loss" in valid

    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_cached_it.yaml").read_text())

    assert (card["stage"], card["speech_encoder"], card["speech_encoder_layer"]) == (
        "instruct",
        TINY_SPEECH_ENCODER_CARD,
        2,
    )

    # The tuned speech LLM is evaluated on the cached dev split.
    eval_config = SpeechEvalConfig()

    eval_config.model.name = "speechmapper_cached_it"
    eval_config.task = SpeechTaskSection(task="asr")
    eval_config.dataset = dataset
    eval_config.generation.max_new_tokens = 4

    run(SpeechEvalRecipe(), eval_config, tmp_path / "cached_eval", no_rich=True)

    hypotheses = [
        json.loads(line)
        for line in (tmp_path / "cached_eval" / "hypotheses" / "dev.rank_0.jsonl").read_text().splitlines()
    ]

    assert sorted(h["references"][0] for h in hypotheses) == sorted(SENTENCES[i] for i in range(NUM_DEV))

    [report] = json.loads((tmp_path / "cached_eval" / "scores.json").read_text())["scores"]

    assert (report["task"], report["test_set"]) == ("asr", f"{fp16_cache.directory}:dev")
    assert "wer" in report["metrics"]


def test_speech_llm_refuses_a_cache_of_other_features(fp16_cache: FeatureCache) -> None:
    mapper = load_model(TINY_MAPPER_CARD, device=CPU, dtype=torch.float32)

    assert isinstance(mapper, SpeechMapper)

    with pytest.raises(FeatureCacheError) as info:
        load_speech_llm(
            get_asset_store().retrieve_card(TINY_MAPPER_CARD),
            SpeechLLMSection(speech_encoder_dtype=torch.bfloat16),
            mapper=mapper,
            unwrapped_mapper=mapper,
            device=CPU,
            feature_cache=fp16_cache,
        )

    assert str(info.value) == (
        f"{fp16_cache.directory}: the feature cache does not hold the features the mapper `{TINY_MAPPER_CARD}` asks for: "
        "the speech encoder ran in float32, not bfloat16 (`speech_llm.speech_encoder_dtype`). "
        "Extract them with `extract-features` into another directory, or point `dataset.feature_cache` at a cache of these."
    )


def test_stage1_evaluation_refuses_the_cache_in_one_line(fp16_cache: FeatureCache, tmp_path: Path) -> None:
    config = Stage1EvalConfig()

    config.model.name = TINY_MAPPER_CARD
    config.dataset = _cache_section(fp16_cache)

    with pytest.raises(
        ValidationError, match=r"`evaluate --stage1` reads audio manifests, not `dataset.feature_cache`"
    ):
        run(Stage1EvalRecipe(), config, tmp_path / "eval", no_rich=True)


def test_pretraining_from_the_cache_resumes_where_it_stopped(fp16_cache: FeatureCache, tmp_path: Path) -> None:
    def pretrain(output_dir: Path, num_steps: int) -> list[tuple[int, float]]:
        config = PretrainConfig()

        config.model.arch = "tiny"
        # No dropout: an unbroken and a resumed run then compute the same losses.
        config.model.config_overrides = {"dropout_p": 0.0}
        config.speech_encoder = Stage1SpeechEncoderSection(name=TINY_SPEECH_ENCODER_CARD, layer=2)
        config.llm = TargetLLMSection(name=TINY_LLAMA_CARD)
        config.dataset = _cache_section(fp16_cache, valid_split=None)
        config.trainer.mixed_precision.mode = "off"
        config.regime = RegimeSection(num_steps=num_steps, checkpoint_every_n_steps=3, publish_metrics_every_n_steps=1)
        config.common.no_sweep_dir = True
        config.common.metric_recorders.tensorboard.enabled = False

        run(PretrainRecipe(), config, output_dir, no_rich=True)

        records = [json.loads(line) for line in (output_dir / "metrics" / "train.jsonl").read_text().splitlines()]

        return [(int(r["Step"]), float(r["Loss"])) for r in records]

    unbroken = pretrain(tmp_path / "unbroken", 6)

    # Stopped at its checkpoint at step 3, then run again to step 6: it resumes from there.
    first_half = pretrain(tmp_path / "resumed", 3)

    resumed = pretrain(tmp_path / "resumed", 6)

    assert [step for step, _ in unbroken] == [1, 2, 3, 4, 5, 6]
    assert first_half == unbroken[:3]

    # The metrics file holds both runs: the second one trained steps 4-6 only,
    # on the batches and from the weights and optimizer state of the unbroken run.
    assert [step for step, _ in resumed] == [1, 2, 3, 4, 5, 6]

    for (step, loss), (_, unbroken_loss) in zip(resumed[3:], unbroken[3:]):
        assert loss == pytest.approx(unbroken_loss, rel=1e-5), f"step {step}"

    assert "Restoring training from the last checkpoint" in (tmp_path / "resumed" / "logs" / "rank_0.log").read_text(
        encoding="utf-8"
    )


def _shard_features(features_file: Path) -> torch.Tensor:
    with safe_open(str(features_file), framework="pt") as shard:
        return shard.get_tensor("features").clone()  # type: ignore[no-any-return]


def _flip_a_feature_byte(features_file: Path) -> None:
    """Flips a bit inside the features (past the safetensors header): the
    file's structure stays valid."""
    data = bytearray(features_file.read_bytes())

    header_size = int.from_bytes(data[:8], "little")

    data[8 + header_size + 5] ^= 0x40

    features_file.write_bytes(data)


def test_a_flipped_byte_in_a_shard_is_found_and_extracting_again_repairs_it(
    fp16_cache: FeatureCache, corpus_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    damaged_dir = tmp_path / "cache"

    shutil.copytree(fp16_cache.directory, damaged_dir)

    features_file = damaged_dir / "splits" / "train" / "shard_00001.safetensors"

    original = _shard_features(features_file)

    _flip_a_feature_byte(features_file)

    assert not torch.equal(_shard_features(features_file), original)

    # Reading the utterance finds it, even when bad input is skipped.
    cache = FeatureCache.open(damaged_dir)

    def read_all(*, check_features: bool) -> list[list[SpeechBatch]]:
        options = SpeechReadOptions(
            max_batch_size=1, sort_window=1, num_parallel_calls=1, on_bad_sample="skip", check_features=check_features
        )

        reader = FeatureCacheDataset(cache).create_reader(
            "train",
            create_fake_gangs(CPU),
            options,
            prepare_input=None,
            encode_text=lambda text: torch.tensor([1]),
            training=False,
            seed=1,
        )

        return list(reader)

    # Unchecked (`dataset.check_features=false`), the damaged bytes are read as features.
    assert len(read_all(check_features=False)) == 8

    with pytest.raises(BadSampleError) as error_info:
        read_all(check_features=True)

    index_file = features_file.with_suffix(".jsonl")

    first_source = json.loads(index_file.read_text(encoding="utf-8").splitlines()[0])["source"]

    assert str(error_info.value) == (
        f"{features_file}: the features of {first_source} do not match their checksum (a damaged shard); "
        f"run `extract-features {damaged_dir}` again to extract it anew."
    )

    # `--verify` (`--config verify=true`): one line naming the shard, exit code 2.
    verify = subprocess.run(
        [sys.executable, "-m", "fairseq2_speechmapper", *_extract_command(damaged_dir, corpus_dir), "--verify"],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=600,
    )

    assert verify.returncode == 2, verify.stderr[-2000:]

    assert (
        verify.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"{features_file}: the features of {first_source} do not match their checksum (a damaged shard); "
            f"run `extract-features {damaged_dir}` again to extract it anew."
        )
    )

    # Extracting again finds it too, and writes it anew.
    _extract(damaged_dir, corpus_dir)

    assert torch.equal(_shard_features(features_file), original)

    verify_feature_cache(FeatureCache.open(damaged_dir))


def test_an_index_edited_in_place_is_found_on_opening(fp16_cache: FeatureCache, tmp_path: Path) -> None:
    damaged_dir = tmp_path / "cache"

    shutil.copytree(fp16_cache.directory, damaged_dir)

    index_file = damaged_dir / "splits" / "train" / "shard_00000.jsonl"

    # Still valid JSON, with the same frames: only the checksum tells.
    index_file.write_text(index_file.read_text(encoding="utf-8").replace('"text": "', '"text": "X'), encoding="utf-8")

    with pytest.raises(FeatureCacheError, match=f"^{index_file}: the index does not match the checksum its shard"):
        FeatureCache.open(damaged_dir).read_split("train")


def test_a_cache_of_the_previous_format_is_one_line_asking_to_extract_again(
    fp16_cache: FeatureCache, tmp_path: Path
) -> None:
    old_dir = tmp_path / "old"

    shutil.copytree(fp16_cache.directory, old_dir)

    header = json.loads((old_dir / "cache.json").read_text())
    header["version"] = 1
    (old_dir / "cache.json").write_text(json.dumps(header))

    with pytest.raises(FeatureCacheError) as error_info:
        FeatureCache.open(old_dir)

    assert str(error_info.value) == (
        f"{old_dir / 'cache.json'}: the cache has format version 1, but this version of fairseq2-speechmapper reads "
        "version 2 (shards with checksums); extract the features again, into another directory."
    )
