"""The trainer's per-step non-finite check, agreed on by every process.

Each micro-batch's ``losses["total"]`` is tested for NaN/inf. With several processes the local
flag (plus, on the micro-batch that carries them, the sample count and the float64 sums behind the
``train/*`` means) is summed over processes in one all-reduce, so that every process stops on the
same step and none applies its update. Under DDP that all-reduce rides on the gradients' own
(:class:`~medvl.training.grad_sync.PayloadAllReduce`); otherwise it is an asynchronous all-reduce
started before backward and awaited after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

from medvl.training.grad_sync import PayloadAllReduce

__all__ = ["FiniteLossCheck", "NonFiniteLossError", "PendingFiniteCheck", "non_finite_message", "scalar_terms"]


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the run stopped without writing a checkpoint."""

    def __init__(self, message: str, *, epoch: int, step: int, terms: Mapping[str, float],
                 last_checkpoint: str | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.terms = dict(terms)
        self.last_checkpoint = last_checkpoint


@dataclass
class PendingFiniteCheck:
    """A started non-finite check: the local flag and, with several processes, the pending all-reduce."""

    finite: torch.Tensor
    buffer: torch.Tensor | None = None
    work: Any = None
    has_payload: bool = False
    #: the buffer rides on DDP's gradient all-reduce (:mod:`medvl.training.grad_sync`)
    with_gradients: bool = False


#: ``stop(what, epoch, terms)``: ends the run (writes its result, raises :class:`NonFiniteLossError`).
StopRun = Callable[[str, int, Mapping[str, float]], NoReturn]


def scalar_terms(losses: Mapping[str, Any]) -> dict[str, float]:
    """The one-element tensor terms of ``losses`` as floats (what a non-finite report shows)."""
    return {k: float(v.detach()) for k, v in losses.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def non_finite_message(what: str, last_checkpoint: str | None) -> str:
    """The message of a run stopped by a non-finite loss or gradient norm (``what`` says which)."""
    return (f"{what}. Training stopped; no update was applied for this step and the last good "
            f"checkpoint is intact: {last_checkpoint or 'none was written yet'}")


class FiniteLossCheck:
    """Starts and awaits the non-finite check of each micro-batch (see the module docstring).

    Args:
        world_size: number of processes.
        grad_payload: the DDP communication hook state the check may ride on (``None``: no DDP hook).
        stop: called on every process when any process's total was non-finite; never returns.
    """

    def __init__(self, world_size: int, grad_payload: PayloadAllReduce | None, stop: StopRun) -> None:
        self.world_size = world_size
        self.grad_payload = grad_payload
        self.stop = stop

    def start(self, losses: Mapping[str, torch.Tensor], payload: torch.Tensor | None = None,
              samples: float = 0.0, with_gradients: bool = False) -> PendingFiniteCheck:
        """Begin the non-finite check of ``losses["total"]``.

        With several processes, the flag, ``samples`` and ``payload`` (float64 sums) are summed over
        processes in one all-reduce: with ``with_gradients`` under DDP, appended to the gradients'
        own all-reduce of the coming backward (no extra collective); otherwise an asynchronous sum
        all-reduce on the default process group (what ``fabric.all_reduce`` reduces over, without its
        extra barrier round trip). :meth:`finish` awaits it.
        """
        finite = torch.isfinite(losses["total"].detach()).all()
        if self.world_size == 1:
            return PendingFiniteCheck(finite=finite)
        flag = (~finite).to(torch.float64).reshape(1)
        parts = [flag] if payload is None else [flag, torch.tensor([samples], dtype=torch.float64,
                                                                   device=flag.device), payload.to(flag.device)]
        buffer = torch.cat(parts)
        if with_gradients and self.grad_payload is not None:
            self.grad_payload.attach(buffer)
            return PendingFiniteCheck(finite=finite, buffer=buffer, has_payload=payload is not None,
                                      with_gradients=True)
        work = torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM, async_op=True)
        return PendingFiniteCheck(finite=finite, buffer=buffer, work=work, has_payload=payload is not None)

    def finish(self, check: PendingFiniteCheck, losses: Mapping[str, torch.Tensor], *, epoch: int, step: int,
               micro: tuple[int, int]) -> torch.Tensor | None:
        """Await the check; stop the run on every process when any process's total was non-finite.

        ``step`` is the optimizer step being taken (1-based), ``micro`` (index, count) the micro-batch.
        Returns ``[Σ samples, *Σ payload]`` with a payload and several processes, ``None`` otherwise.
        """
        finite, summed = check.finite, None
        if check.buffer is not None:
            buffer = check.buffer
            if check.with_gradients:
                assert self.grad_payload is not None
                carried = self.grad_payload.take()
                if carried is None:  # no bucket carried it (same on every process): reduce it now
                    torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
                else:
                    buffer = carried
            else:
                assert check.work is not None
                check.work.wait()
            finite = buffer[0] == 0
            summed = buffer[1:] if check.has_payload else None
        if bool(finite):
            return summed
        terms = scalar_terms(losses)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
        self.stop(f"non-finite loss at epoch {epoch}, optimizer step {step} "
                  f"(micro-batch {micro[0] + 1} of {micro[1]}); terms: {shown}", epoch, terms)

    def check(self, losses: Mapping[str, torch.Tensor], *, epoch: int, step: int, micro: tuple[int, int],
              payload: torch.Tensor | None = None, samples: float = 0.0) -> torch.Tensor | None:
        """:meth:`start` and :meth:`finish` at once (the all-reduce is not overlapped with backward)."""
        return self.finish(self.start(losses, payload=payload, samples=samples), losses,
                           epoch=epoch, step=step, micro=micro)
