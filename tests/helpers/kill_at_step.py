"""The command line (``python kill_at_step.py speechmapper pretrain ...``,
also under ``torchrun``) with a SIGKILL at a chosen moment, for the resume and
fault tests: a deterministic kill, like a node that dies.

``KILL_AT_STEP=N``: kill when step N starts, after the checkpoint in flight is
committed (``KILL_WHEN=start``, the default), or after the backward pass of
step N, in the middle of the step (``KILL_WHEN=backward``). ``KILL_RANK=r``
kills rank r only; every rank otherwise."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from fairseq2_speechmapper.cli import main


def _install() -> None:
    # Through fairseq2.recipe: fairseq2's modules import each other in one order.
    from fairseq2.recipe import Trainer

    kill_at_step = int(os.environ.get("KILL_AT_STEP", "0"))
    if kill_at_step <= 0:
        return

    kill_rank = os.environ.get("KILL_RANK")
    if kill_rank is not None and kill_rank != os.environ.get("RANK", "0"):
        return

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


if __name__ == "__main__":
    _install()

    main(sys.argv[1:])
