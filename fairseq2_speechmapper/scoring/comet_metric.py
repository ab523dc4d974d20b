"""COMET with unbabel-comet 2.2.7, reported ×100 as in the paper.

The model is a Hub name (``Unbabel/wmt22-comet-da``, the paper's) found in the
local Hugging Face cache, or a local checkpoint. Nothing is downloaded unless
asked: evaluation machines often have no network, and a half-downloaded model
is worse than a clear error.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

from fairseq2_speechmapper.errors import MissingExtraError, check_extra_installed
from fairseq2_speechmapper.scoring.errors import ScoringError, check_same_length

if TYPE_CHECKING:
    from comet.models import CometModel

DEFAULT_COMET_MODEL: Final = "Unbabel/wmt22-comet-da"

# The runtime dependencies of unbabel-comet 2.2.7 (the `comet` extra), as imported
# (pkg_resources: setuptools<81, which torchmetrics 0.10 needs).
_COMET_MODULES: Final = (
    "entmax",
    "jsonargparse",
    "pandas",
    "pytorch_lightning",
    "scipy",
    "torchmetrics",
    "pkg_resources",
)

# unbabel-comet declares numpy<2 but runs on 2.x: installed without its dependencies.
_COMET_INSTALL: Final = "pip install --no-deps unbabel-comet==2.2.7"

# Loggers that print a line per model load or `predict` call at INFO level.
_NOISY_LOGGERS: Final = ("comet", "pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch")


@final
@dataclass(frozen=True, kw_only=True)
class CometScore:
    comet: float
    """The mean segment score ×100."""

    segment_scores: list[float]
    """The score of each segment ×100, in input order."""

    model: str
    """The model as given (Hub name or path)."""

    def metrics(self) -> dict[str, float]:
        return {"comet": self.comet}

    def info(self) -> dict[str, object]:
        return {"comet_model": self.model, "num_segments": len(self.segment_scores)}


@final
class CometScorer:
    """A loaded COMET model; :meth:`score` scores translations with it."""

    def __init__(self, model: CometModel, name: str, *, gpus: int) -> None:
        self._model = model
        self._name = name
        self._gpus = gpus

    def score(
        self, sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str], *, batch_size: int = 16
    ) -> CometScore:
        """Scores ``hypotheses`` (translations of ``sources``) against
        ``references``; an empty hypothesis is scored like any other."""
        check_same_length("COMET", sources=sources, hypotheses=hypotheses, references=references)

        if not sources:
            raise ScoringError("COMET: there is no segment to score.")

        samples = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hypotheses, references)]

        with _quiet_comet():
            output = self._model.predict(samples, batch_size=batch_size, gpus=self._gpus, progress_bar=False)

        segment_scores = [100.0 * float(score) for score in output.scores]

        return CometScore(
            comet=sum(segment_scores) / len(segment_scores), segment_scores=segment_scores, model=self._name
        )


def load_comet(
    model: str | Path = DEFAULT_COMET_MODEL, *, gpus: int | None = None, allow_download: bool = False
) -> CometScorer:
    """Loads a COMET model.

    :param model: a Hub name (``Unbabel/wmt22-comet-da``) looked up in the
        Hugging Face cache (``$HF_HOME``), a model directory (with
        ``checkpoints/model.ckpt`` and ``hparams.yaml``) or a checkpoint file.
    :param gpus: 1 to score on the GPU, 0 on CPU; by default the GPU if there
        is one. COMET's multi-GPU mode starts its own processes: not offered.
    :param allow_download: download a Hub model (and its encoder's tokenizer)
        that is not cached.

    :raises ScoringError: if the model or its encoder's tokenizer is not
        there; the message says how to get them.
    """
    comet = import_comet()

    import torch

    if gpus is None:
        gpus = 1 if torch.cuda.is_available() else 0

    if gpus not in (0, 1):
        raise ScoringError(f"COMET: `gpus` must be 0 or 1, not {gpus}.")

    name = str(model)

    checkpoint_file = _resolve_checkpoint(name, allow_download)

    try:
        with _quiet_comet():
            comet_model = comet.load_from_checkpoint(str(checkpoint_file), local_files_only=not allow_download)
    except (OSError, ValueError) as ex:
        # transformers' errors when the encoder's tokenizer or config is not
        # cached (or, named by a path, does not exist).
        encoder = _encoder_name(checkpoint_file)

        raise ScoringError(
            f"COMET model {name!r} needs the tokenizer and config of its encoder {encoder!r}, which are not in the "
            f"Hugging Face cache ({_hf_cache_dir()}): on a machine with network run `huggingface-cli download {encoder} "
            f"--include '*.json' 'sentencepiece.bpe.model'` and copy the cache here (or set HF_HOME) ({_one_line(ex)})."
        ) from None

    return CometScorer(comet_model, name, gpus=gpus)


def _resolve_checkpoint(name: str, allow_download: bool) -> Path:
    path = Path(name).expanduser()

    if path.is_file():
        return path

    if path.is_dir():
        checkpoint_file = path / "checkpoints" / "model.ckpt"

        if not checkpoint_file.is_file():
            raise ScoringError(f"{path}: not a COMET model directory; {checkpoint_file} does not exist.")

        return checkpoint_file

    # `Unbabel/wmt22-comet-da` is a relative path too; a path is what has more
    # than one slash, starts like one, or names a checkpoint file.
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or name.endswith(".ckpt"):
        raise ScoringError(f"{path}: the COMET checkpoint does not exist.")

    if allow_download:
        comet = import_comet()

        try:
            return Path(comet.download_model(name))
        except KeyError as ex:
            raise ScoringError(f"COMET model {name!r} cannot be downloaded: {_one_line(ex)}") from None

    from huggingface_hub import snapshot_download

    # `comet.download_model` without its fall-back to the legacy S3 download,
    # which would try the network.
    try:
        model_dir = snapshot_download(repo_id=name, local_files_only=True)
    except (FileNotFoundError, ValueError):  # LocalEntryNotFoundError, HFValidationError
        raise ScoringError(
            f"COMET model {name!r} is not in the Hugging Face cache ({_hf_cache_dir()}) and is not downloaded here: "
            f"on a machine with network run `huggingface-cli download {name}` (or "
            f"`python -c \"import comet; comet.download_model('{name}')\"`), then copy the cache here and set "
            f"HF_HOME, or pass the model directory or its checkpoints/model.ckpt."
        ) from None

    checkpoint_file = Path(model_dir) / "checkpoints" / "model.ckpt"

    if not checkpoint_file.is_file():
        raise ScoringError(f"COMET model {name!r}: the cached snapshot {model_dir} has no checkpoints/model.ckpt.")

    return checkpoint_file


def _encoder_name(checkpoint_file: Path) -> str:
    import yaml

    hparams_file = checkpoint_file.parents[1] / "hparams.yaml"

    try:
        hparams = yaml.safe_load(hparams_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return "xlm-roberta-large"

    return str(hparams.get("pretrained_model", "xlm-roberta-large"))


def _hf_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


def _one_line(ex: BaseException) -> str:
    return " ".join(str(ex).split())


def import_comet():  # type: ignore[no-untyped-def]
    """Imports unbabel-comet; a missing package is one line that says what to install."""
    check_extra_installed("comet", "COMET", _COMET_MODULES)

    if find_spec("comet") is None:
        raise MissingExtraError(f"COMET needs unbabel-comet: run `{_COMET_INSTALL}`.")

    root = logging.getLogger()

    handlers, level = list(root.handlers), root.level

    with warnings.catch_warnings():
        # torchmetrics 0.10 (unbabel-comet's) warns about pkg_resources on import.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

        import comet

    # `import comet` calls `logging.basicConfig(level=INFO)`: undone, so that
    # importing it does not change how the whole program logs.
    root.handlers[:] = handlers
    root.setLevel(level)

    return comet


@contextmanager
def _quiet_comet() -> Iterator[None]:
    """Silences the INFO lines and warnings of COMET and Lightning (GPU/TPU
    availability, tips, frozen encoder, dataloader workers) while it runs."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]

    levels = [logger.level for logger in loggers]

    for logger in loggers:
        logger.setLevel(logging.WARNING)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*|comet.*|torchmetrics.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")

            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
