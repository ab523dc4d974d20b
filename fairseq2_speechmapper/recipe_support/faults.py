"""Faults of a training run reported in one line: a checkpoint that cannot be
read (truncated or damaged), one that cannot be written (a full disk), and a
loss that is not finite.

fairseq2 0.8.1 already writes each checkpoint into ``step_N.tmp`` and renames
it when complete; a resumed run never looks at a ``.tmp`` directory, and saving
step N again removes it. What it does not do is say what went wrong in one
line: a damaged checkpoint file ends in a traceback, and a full disk during
``torch.save`` even reads "must contain pickeable objects only".
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import final

import torch
from torch import Tensor
from typing_extensions import override

from fairseq2.assets import AssetCardError
from fairseq2.checkpoint import CheckpointError, CheckpointManager
from fairseq2.checkpoint.manager import CheckpointStateNotValidError
from fairseq2.error import OperationalError
from fairseq2.gang import Gangs
from fairseq2.io import CorruptFileError, DataNotPicklableError
from fairseq2.logging import log
from fairseq2.model_checkpoint import CorruptModelCheckpointError
from fairseq2.recipe.base import RecipeContext
from fairseq2.task import Task
from fairseq2.trainer import Trainer

from fairseq2_speechmapper.datasets import BadSampleError, SpeechBatch
from fairseq2_speechmapper.errors import SpeechMapperError, describe_error_chain
from fairseq2_speechmapper.mapper_card import MapperCard


class CorruptCheckpointError(SpeechMapperError):
    """A checkpoint file is truncated or damaged."""


class CheckpointMismatchError(SpeechMapperError):
    """A model checkpoint does not fit the model its card describes."""


class CheckpointWriteError(SpeechMapperError):
    """A checkpoint could not be written (a full disk)."""


class NonFiniteLossError(SpeechMapperError):
    """A training loss is NaN or infinite."""


def _causes(ex: BaseException) -> Iterator[BaseException]:
    cause: BaseException | None = ex

    while cause is not None:
        yield cause

        cause = cause.__cause__ or cause.__context__


@contextmanager
def reporting_model_load_errors() -> Iterator[None]:
    """Turns a model checkpoint that cannot be read (truncated, damaged) or
    does not fit its card into one line naming the file.

    fairseq2's recipe command line reports both with a traceback, and a recipe
    cannot register a handler of its own (fairseq2 registers its handlers
    after the recipe's), so the recipes load their models inside this.
    """
    try:
        yield
    except Exception as ex:
        corrupt = next((c for c in _causes(ex) if isinstance(c, CorruptModelCheckpointError)), None)
        corrupt_file = (
            None if corrupt is None else next((c for c in _causes(corrupt) if isinstance(c, CorruptFileError)), None)
        )

        if corrupt_file is not None:
            raise CorruptCheckpointError(
                f"{corrupt_file.file}: the checkpoint file is truncated or damaged and cannot be read ({_innermost(corrupt_file)})."
            ) from None

        if isinstance(ex, AssetCardError):
            raise CheckpointMismatchError(describe_error_chain(ex)) from None

        raise


def training_task(context: RecipeContext, trainer: Trainer, card: MapperCard) -> Task:
    """``trainer`` as a training recipe's task: ``card`` is written beside
    every checkpoint (by the first rank), and faults are reported in one line
    (:class:`FaultReportingTrainer`)."""
    checkpoint_dir = context.output_dir / "checkpoints"

    if context.gangs.root.rank == 0:
        trainer.register_checkpoint_save_hook(card.checkpoint_hook(checkpoint_dir))

    return FaultReportingTrainer(trainer, context.get_checkpoint_manager(), context.gangs, checkpoint_dir)


@final
class FaultReportingTrainer(Task):
    """Runs a trainer; a checkpoint it cannot restore or write is reported in
    one line, and a checkpoint left unfinished by a failed write is removed.

    When the run fails otherwise (a NaN loss, bad data), the checkpoint still
    being saved in the background is completed first: fairseq2 commits it
    only at the start of the next step, after reading that step's batch, and
    would leave it in ``step_N.tmp``; a resumed run would start from the one
    before.
    """

    def __init__(
        self, trainer: Task, checkpoint_manager: CheckpointManager, gangs: Gangs, checkpoint_dir: Path
    ) -> None:
        self._trainer = trainer
        self._checkpoint_manager = checkpoint_manager
        self._gangs = gangs
        self._checkpoint_dir = checkpoint_dir

    @override
    def run(self) -> None:
        try:
            self._trainer.run()
        except (CheckpointError, CheckpointStateNotValidError, OperationalError) as ex:
            error = self._describe(ex)
            if error is None:
                self._complete_pending_checkpoint(on_every_rank=False)

                raise

            raise error from None
        except BadSampleError:
            # Every data-parallel rank raises it at the same step (the reader
            # agrees on it), so the commit's barriers meet.
            self._complete_pending_checkpoint(on_every_rank=True)

            raise
        except Exception:
            self._complete_pending_checkpoint(on_every_rank=False)

            raise

    def _complete_pending_checkpoint(self, *, on_every_rank: bool) -> None:
        # Otherwise, with several processes, the others may not reach the
        # barriers of a commit: their last complete checkpoint is the one before.
        if (self._gangs.root.size > 1 and not on_every_rank) or not self._checkpoint_manager.is_saving:
            return

        try:
            if self._checkpoint_manager.maybe_complete_save_operation(blocking=True):
                log.info("The checkpoint in flight is saved before the run stops.")
        except Exception as ex:
            log.warning("The checkpoint being saved could not be completed: {}", _innermost(ex))

    def _describe(self, ex: Exception) -> SpeechMapperError | None:
        causes = list(_causes(ex))

        if isinstance(ex, CheckpointError) and any(isinstance(c, CorruptFileError) for c in causes):
            return CorruptCheckpointError(
                f"{ex} The file is truncated or damaged: move {self._checkpoint_dir / f'step_{ex.step_nr}'} away and run the same command again to resume from the checkpoint before it."
            )

        what = self._failed_write(ex, causes)
        if what is None:
            return None

        removed = self._remove_unfinished_checkpoints()

        # An unfinished checkpoint: the write that failed was most likely its.
        if removed:
            what = f"A checkpoint could not be written to {self._checkpoint_dir}"

        try:
            free = f"{shutil.disk_usage(self._checkpoint_dir).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"

        return CheckpointWriteError(
            f"{what} ({_innermost(ex)}; {free}: is the disk full?); "
            f"{'removed the unfinished ' + ', '.join(removed) if removed else 'nothing unfinished is left'}; "
            "free some space and run the same command again to resume from the last complete checkpoint."
        )

    def _failed_write(self, ex: Exception, causes: list[BaseException]) -> str | None:
        """What could not be written, if ``ex`` is a failed write."""
        if isinstance(ex, CheckpointStateNotValidError):
            # `torch.save` reports a failed write as a `RuntimeError`, which
            # fairseq2 takes for data that cannot be pickled.
            if any(isinstance(c, DataNotPicklableError) and isinstance(c.__cause__, RuntimeError) for c in causes):
                return f"A checkpoint could not be written to {self._checkpoint_dir}"

            return None

        os_error = next((c for c in causes if isinstance(c, OSError)), None)
        if not isinstance(ex, OperationalError) or os_error is None:
            return None

        if os_error.filename is not None and self._checkpoint_dir in Path(os_error.filename).parents:
            return f"A checkpoint could not be written to {self._checkpoint_dir}"

        # A full disk under another file of the run (metrics, logs).
        if os_error.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"A file of the run could not be written{f' ({os_error.filename})' if os_error.filename else ''}"

        return None

    def _remove_unfinished_checkpoints(self) -> list[str]:
        removed = []

        for step_dir in sorted(self._checkpoint_dir.glob("step_*.tmp")):
            shutil.rmtree(step_dir, ignore_errors=True)

            removed.append(step_dir.name)

        return removed

    @override
    def request_stop(self) -> None:
        self._trainer.request_stop()

    @override
    def close(self) -> None:
        self._trainer.close()

    @property
    @override
    def step_nr(self) -> int:
        return self._trainer.step_nr


def check_loss_is_finite(loss: Tensor, batch: SpeechBatch, *, step_nr: int) -> None:
    """Stops the run before a NaN or infinite loss reaches the weights: its
    gradient would make them NaN, and the next checkpoint would keep them.
    (One device synchronisation per batch.)"""
    if bool(torch.isfinite(loss.detach()).all()):
        return

    sources = ", ".join(batch.sources[:3]) + (f" and {len(batch.sources) - 3} more" if len(batch.sources) > 3 else "")

    raise NonFiniteLossError(
        f"Step {step_nr}: the loss is {loss.detach().float().sum().item()} on the batch of {sources}; the step was not "
        "taken and no checkpoint holds it. Check those utterances, lower the learning rate or set "
        "`trainer.max_grad_norm`, then run the same command again to resume from the last checkpoint."
    )


def _innermost(ex: BaseException) -> str:
    """The most specific message of an error chain, on one line."""
    message = str(ex)

    for cause in _causes(ex):
        if str(cause):
            message = str(cause)

    return " ".join(message.split())
