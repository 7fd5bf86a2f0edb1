"""``16-mixed`` on a CPU is float16 with loss scaling (not a silent switch to bf16), and resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from _training_tiny import TinyDataset, TinyDual, TinyObjective, collate, tiny_config, weights

from medvl.training import Callback, Trainer
from medvl.training.checkpoint import resolve_checkpoint
from medvl.utils.io import read_json


class Spike(TinyObjective):
    """Multiplies the total by 1e30 on call ``at``: the fp16 backward overflows there."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.calls += 1
        terms = super().forward(outputs, batch)
        if self.calls == self.at:
            terms["total"] = terms["total"].float() * 1e30
        return terms


class Record(Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.scales: list[float] = []

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        self.states.append(weights(trainer.model))
        self.scales.append(float(trainer.fabric._precision.scaler.get_scale()))


def test_fp16_mixed_on_cpu_uses_float16_and_the_grad_scaler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, record = TinyDual(dropout=0.0), Record()
    cfg = tiny_config(precision="16-mixed", epochs=2, batch_size=4, schedule={"kind": "constant", "warmup_steps": 0})
    trainer = Trainer(cfg, tmp_path, callbacks=[record])
    # objective calls: 2 validation batches, 5 steps, 2 validation batches, then step 6, 7: call 11 = step 7
    trainer.fit(model, Spike(at=11), TinyDataset(20), TinyDataset(6, seed=1), collate_fn=collate)
    precision = trainer.fabric._precision
    assert type(precision).__name__ == "MixedPrecision" and precision._desired_input_dtype == torch.float16
    with trainer.fabric.autocast():
        assert model.vision[0](torch.randn(2, 8)).dtype == torch.float16  # fp16, not bf16
    moved = [not all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(record.states, record.states[1:], strict=False)]
    moved = [True, *moved]  # moved[i]: whether optimizer step i + 1 changed the weights
    # the scaler starts at 2**16 and backs off on the first steps' genuine fp16 overflows, then settles
    assert moved[4:6] == [True, True] and record.scales[4] == record.scales[5]
    # step 7 overflowed (the spike): its update was skipped and the scale halved; training went on
    assert moved[6] is False and record.scales[6] == record.scales[5] / 2
    assert moved[7:] == [True] * 3
    state = read_json(resolve_checkpoint(tmp_path, "last") / "state.json")["trainer"]["grad_scaler"]
    assert state["scale"] == record.scales[-1]  # checkpointed, so a resumed run continues with it
