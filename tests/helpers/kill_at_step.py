"""The command line (``python kill_at_step.py speechmapper pretrain ...``,
also under ``torchrun``) with a fault at a chosen step, for the resume and
fault tests: deterministic, like a node that dies or a loss that overflows.

- ``KILL_AT_STEP=N``: SIGKILL when step N starts, after the checkpoint in
  flight is committed (``KILL_WHEN=start``, the default), or after the
  backward pass of step N, in the middle of the step (``KILL_WHEN=backward``);
  on rank ``KILL_RANK`` only, when set.
- ``NAN_AT_STEP=N``: the loss of ``pretrain``'s step N is NaN (a fresh run), on rank ``NAN_RANK`` only,
  when set.
- ``SLOW_SAVE_AT_STEP=N``: the checkpoint of step N takes 3 s more to write
  (in the background), so that it is still in flight at the next steps."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from fairseq2_speechmapper.cli import main


def _on_this_rank(name: str) -> bool:
    rank = os.environ.get(name)

    return rank is None or rank == os.environ.get("RANK", "0")


def _install() -> None:
    # Through fairseq2.recipe: fairseq2's modules import each other in one order.
    from fairseq2.checkpoint import StandardCheckpointManager
    from fairseq2.recipe import Trainer

    kill_at_step = int(os.environ.get("KILL_AT_STEP", "0"))

    if kill_at_step > 0 and _on_this_rank("KILL_RANK"):
        do_run_step = Trainer._do_run_step

        def kill_at(trainer: Any, *args: Any) -> Any:
            if trainer._step_nr == kill_at_step:
                if os.environ.get("KILL_WHEN", "start") == "start":
                    trainer._checkpoint_manager.maybe_complete_save_operation(blocking=True)

                    os.kill(os.getpid(), signal.SIGKILL)

                backward = trainer._fp16_loss_scaler.backward

                def backward_then_die(loss: Any) -> None:
                    backward(loss)

                    os.kill(os.getpid(), signal.SIGKILL)

                trainer._fp16_loss_scaler.backward = backward_then_die

            return do_run_step(trainer, *args)

        Trainer._do_run_step = kill_at  # type: ignore[method-assign]

    nan_at_step = int(os.environ.get("NAN_AT_STEP", "0"))

    if nan_at_step > 0 and _on_this_rank("NAN_RANK"):
        # In the unit, where the guard sees it: one batch a step, counted from 1.
        from fairseq2_speechmapper.recipes.pretrain import units

        sum_kept_loss, num_calls = units.sum_kept_loss, [0]

        def nan_at(*args: Any, **kwargs: Any) -> Any:
            loss, num_kept = sum_kept_loss(*args, **kwargs)

            num_calls[0] += 1

            return (loss * float("nan") if num_calls[0] == nan_at_step else loss), num_kept

        units.sum_kept_loss = nan_at

    slow_save_at_step = int(os.environ.get("SLOW_SAVE_AT_STEP", "0"))

    if slow_save_at_step > 0:
        save_state_files = StandardCheckpointManager._save_state_files

        def save_slowly(manager: Any, step_nr: int, records: Any) -> None:
            if step_nr == slow_save_at_step:
                time.sleep(3)

            save_state_files(manager, step_nr, records)

        StandardCheckpointManager._save_state_files = save_slowly  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()

    main(sys.argv[1:])
