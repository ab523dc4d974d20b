"""Faults of a training run reported in one line: a checkpoint that cannot be
read (truncated or damaged), one that cannot be written (a full disk), and a
loss or gradient that is not finite (kept out of the weights on the device,
read back only at the metric and checkpoint steps: :class:`NonFiniteStepGuard`).

fairseq2 0.8.1 already writes each checkpoint into ``step_N.tmp`` and renames
it when complete; a resumed run never looks at a ``.tmp`` directory, and saving
step N again removes it. What it does not do is say what went wrong in one
line: a damaged checkpoint file ends in a traceback, and a full disk during
``torch.save`` even reads "must contain pickeable objects only".
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import final

import torch
from torch import Tensor
from torch.nn.utils import get_total_norm
from torch.optim import Optimizer
from typing_extensions import override

from fairseq2.assets import AssetCardError
from fairseq2.checkpoint import CheckpointError, CheckpointManager
from fairseq2.checkpoint.manager import CheckpointStateNotValidError
from fairseq2.error import InvalidOperationError, OperationalError
from fairseq2.gang import Gang, Gangs, ReduceOperation
from fairseq2.io import CorruptFileError, DataNotPicklableError
from fairseq2.logging import log
from fairseq2.model_checkpoint import CorruptModelCheckpointError
from fairseq2.recipe.base import RecipeContext
from fairseq2.recipe.config import RegimeSection
from fairseq2.task import Task
from fairseq2.trainer import Trainer

from fairseq2_speechmapper.asset_store.mapper_card import MapperCard
from fairseq2_speechmapper.datasets import BadSampleError, SpeechBatch
from fairseq2_speechmapper.errors import SpeechMapperError, describe_error_chain


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
        except (BadSampleError, NonFiniteLossError):
            # Every rank raises them at the same step (the reader and the
            # guard agree on them), so the commit's barriers meet.
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


@final
class NonFiniteStepGuard:
    """Keeps a NaN or infinite loss or gradient out of the weights without
    reading a value back from the device at every step.

    Before each optimizer step, whether the step's loss or a gradient is not
    finite is computed on the device; a fused optimizer (``impl: fused``) skips
    such a step on the device through its ``found_inf`` input (as it does for
    fp16 overflows), so the weights and the optimizer state stay finite. The
    flags are read back, and agreed on by every rank, only every
    ``read_every`` steps: at the metric interval, before each checkpoint and at
    the last step; a step found not finite stops the run there, on every rank,
    with one line naming it, before any checkpoint holds the steps after it.

    An optimizer without ``found_inf`` (a non-fused one) cannot skip a step on
    the device: the flags are then read before every update (one device
    synchronisation per step).
    """

    def __init__(self, optimizer: Optimizer, gang: Gang, *, read_at: Callable[[int], bool]) -> None:
        self._optimizer = optimizer
        self._gang = gang
        self._read_at = read_at
        self._skips_on_device = bool(optimizer.defaults.get("fused")) and bool(
            getattr(optimizer, "_step_supports_amp_scaling", False)
        )
        self._step: _GuardedStep | None = None
        self._unread_steps: list[_GuardedStep] = []

        optimizer.register_step_pre_hook(self._before_update)
        optimizer.register_step_post_hook(self._after_update)

    @staticmethod
    def read_at_regime(regime: RegimeSection) -> Callable[[int], bool]:
        """The steps where the trainer may publish metrics or save a
        checkpoint (also after a validation: an early stop saves one); every
        step where that depends on data epochs. (A stop requested by a signal
        saves one at any step: it holds finite weights, the skipped step unread.)"""
        if regime.num_steps is None or any(
            n is not None
            for n in (
                regime.num_data_epochs,
                regime.checkpoint_every_n_data_epochs,
                regime.publish_metrics_every_n_data_epochs,
                regime.validate_every_n_data_epochs,
            )
        ):
            return lambda step_nr: True

        num_steps = regime.num_steps

        def at_interval(step_nr: int, after_n_steps: int, every_n_steps: int | None) -> bool:
            return every_n_steps is not None and step_nr > after_n_steps and step_nr % every_n_steps == 0

        return lambda step_nr: (
            step_nr >= num_steps
            or at_interval(step_nr, regime.checkpoint_after_n_steps, regime.checkpoint_every_n_steps)
            or at_interval(step_nr, regime.publish_metrics_after_n_steps, regime.publish_metrics_every_n_steps)
            or at_interval(step_nr, regime.validate_after_n_steps, regime.validate_every_n_steps)
        )

    @staticmethod
    def for_recipe(context: RecipeContext, regime: RegimeSection) -> NonFiniteStepGuard:
        """The guard of the recipe's optimizer, reading at ``regime``'s metric
        and checkpoint steps across all of its ranks."""
        return NonFiniteStepGuard(
            context.get_optimizer(), context.gangs.root, read_at=NonFiniteStepGuard.read_at_regime(regime)
        )

    def begin_step(self, step_nr: int) -> None:
        self._step = _GuardedStep(step_nr, self._gang.device)

    def observe_loss(self, loss: Tensor, batch: SpeechBatch) -> None:
        """Records one batch's loss of the step (all of them with gradient
        accumulation); nothing is read back."""
        if self._step is None:
            raise InvalidOperationError("`begin_step()` must be called first.")

        self._step.observe(loss.detach(), batch.sources)

    def _before_update(self, optimizer: Optimizer, args: object, kwargs: object) -> None:
        step, self._step = self._step, None
        if step is None:
            return

        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

        step.close(grads)

        self._unread_steps.append(step)

        if not self._skips_on_device or self._read_at(step.step_nr):
            # Before the update: the step is not taken.
            self._read()
        else:
            skip = step.not_finite.float()

            # With fp16 the loss scaler sets its own `found_inf`: skip on either.
            scaler_found_inf = getattr(optimizer, "found_inf", None)
            if isinstance(scaler_found_inf, Tensor):
                skip = torch.maximum(skip, scaler_found_inf)

            optimizer.found_inf = skip  # type: ignore[attr-defined]

    def _after_update(self, optimizer: Optimizer, args: object, kwargs: object) -> None:
        if getattr(optimizer, "grad_scale", None) is None and hasattr(optimizer, "found_inf"):
            del optimizer.found_inf  # type: ignore[attr-defined]

    def _read(self) -> None:
        steps, self._unread_steps = self._unread_steps, []

        # Per step: [loss not finite, a gradient not finite].
        local = torch.stack([s.flags for s in steps]).to(torch.int32)

        agreed = local.clone()

        if self._gang.size > 1:
            self._gang.all_reduce(agreed, ReduceOperation.MAX)

        # The one read of the interval.
        agreed_flags = agreed.tolist()

        first = next((i for i, flags in enumerate(agreed_flags) if any(flags)), None)
        if first is None:
            return

        message = steps[first].describe(local[first].tolist(), agreed_flags[first], stop_step_nr=steps[-1].step_nr)

        raise NonFiniteLossError(message)


@final
class _GuardedStep:
    """One step's finiteness flags, kept on the device until read."""

    def __init__(self, step_nr: int, device: torch.device) -> None:
        self.step_nr = step_nr
        self.sources: list[str] = []
        self._loss_sum: Tensor | None = None
        self.flags = torch.zeros(2, dtype=torch.bool, device=device)

    def observe(self, loss: Tensor, sources: list[str]) -> None:
        loss_sum = loss.float().sum()

        self._loss_sum = loss_sum if self._loss_sum is None else self._loss_sum + loss_sum

        self.sources.extend(sources)

    def close(self, grads: list[Tensor]) -> None:
        # A NaN or an infinity anywhere makes the sum or the norm NaN or infinite.
        loss_not_finite = self.flags[0] if self._loss_sum is None else ~torch.isfinite(self._loss_sum)

        grad_not_finite = ~torch.isfinite(get_total_norm(grads, foreach=True)) if grads else self.flags[1]

        self.flags = torch.stack([loss_not_finite, grad_not_finite])

    @property
    def not_finite(self) -> Tensor:
        return self.flags.any()

    def describe(self, local_flags: list[int], agreed_flags: list[int], *, stop_step_nr: int) -> str:
        stopped = "" if stop_step_nr == self.step_nr else f" and the run stopped at step {stop_step_nr}"

        fix = (
            f"the step was not taken{stopped}, and no checkpoint holds it. Check those utterances, lower the learning "
            "rate or set `trainer.max_grad_norm`, then run the same command again to resume from the last checkpoint."
        )

        sources = ", ".join(self.sources[:3]) + (f" and {len(self.sources) - 3} more" if len(self.sources) > 3 else "")

        if local_flags[0] and self._loss_sum is not None:
            return f"Step {self.step_nr}: the loss is {self._loss_sum.item()} on the batch of {sources}; {fix}"

        # With data parallelism every rank has the gradients of every rank's loss.
        if agreed_flags[0]:
            return f"Step {self.step_nr}: the loss is not finite on another rank's batch; {fix}"

        return f"Step {self.step_nr}: a gradient is not finite (the loss is finite) on the batch of {sources}; {fix}"


def _innermost(ex: BaseException) -> str:
    """The most specific message of an error chain, on one line."""
    message = str(ex)

    for cause in _causes(ex):
        if str(cause):
            message = str(cause)

    return " ".join(message.split())
