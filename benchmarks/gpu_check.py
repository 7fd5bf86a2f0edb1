"""GPU check: training throughput, memory and evaluation kernels on one accelerator, in < 5 minutes.

1. **Training steps** of a base-size tower (ViT-B/16: width 768, 12 blocks, 224 px; with a
   BERT-base-size text tower) in ``bf16-mixed`` and ``16-mixed``: samples/s of
   ``medvl.training.Trainer`` against a bare PyTorch loop on the same model, data, optimizer and
   autocast/GradScaler (target: bare / trainer time ratio ≤ 1.05).
2. **Peak memory** of one training step (``torch.cuda.max_memory_allocated``): plain, with
   gradient checkpointing in both towers, and with LoRA (r = 16) on the vision tower.
3. **Kernels** against their matmul floor on the device: retrieval (``evaluate_retrieval``: exact
   ranks both ways vs the bare similarity matmul), alignment (``spectral_alignment_score`` vs the
   two covariance matmuls it needs) and the linear probe's solver (``fit_logistic_batched`` vs one
   logits + gradient matmul pair per L-BFGS iteration it ran).

    python -m benchmarks.gpu_check                  # on a GPU machine (~3-4 min)
    python -m benchmarks.gpu_check --tiny           # CPU smoke run of the same code (~30 s; figures meaningless)

Peak memory is reported only on CUDA. Every timing is the median of ``--repeats`` after warm-up.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.trainer_overhead import MemoryImageText, collate, objective_config
from medvl.config.loading import config_from_dict
from medvl.config.model import ModelConfig
from medvl.config.training import TrainConfig
from medvl.models import DualEncoder, build_model
from medvl.objectives import build_objective
from medvl.training import Callback, Trainer
from medvl.training.optim import build_optimizer
from medvl.training.task import TrainTask

BASE = {"width": 768, "depth": 12, "heads": 12, "image_size": 224, "patch_size": 16, "text_width": 768,
        "text_depth": 12, "batch": 64, "steps": 30, "records": 64 * 35}
TINY = {"width": 32, "depth": 2, "heads": 2, "image_size": 32, "patch_size": 8, "text_width": 32,
        "text_depth": 1, "batch": 8, "steps": 6, "records": 8 * 8}


def model_config(size: dict[str, Any], *, checkpointing: bool = False, lora: bool = False) -> ModelConfig:
    vision: dict[str, Any] = {"kind": "tiny_vit", "image_size": size["image_size"], "patch_size": size["patch_size"],
                              "width": size["width"], "depth": size["depth"], "heads": size["heads"],
                              "grad_checkpointing": checkpointing}
    if lora:
        vision["lora"] = {"r": 16, "alpha": 32}
    return config_from_dict({
        "embed_dim": 512,
        "vision": vision,
        "text": {"kind": "tiny_text", "vocab_size": 30522, "max_length": 64, "width": size["text_width"],
                 "depth": size["text_depth"], "heads": size["heads"], "grad_checkpointing": checkpointing},
        "classifiers": {"findings": {"kind": "multilabel", "num_classes": 10}},
    }, ModelConfig)


def build(size: dict[str, Any], data: MemoryImageText, **options: Any) -> DualEncoder:
    torch.manual_seed(0)
    model = build_model(model_config(size, **options))
    model.train_tokenizer(data.texts)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model: DualEncoder, data: MemoryImageText, size: dict[str, Any], precision: str,
              device: torch.device) -> float:
    """Samples/s of forward → objective → backward → step → zero_grad under autocast (+ GradScaler for fp16)."""
    model = model.to(device).train()
    objective = build_objective(objective_config())
    task = TrainTask(model, objective).to(device)
    optimizer, _ = build_optimizer(task, TrainConfig().optimizer)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    loader = torch.utils.data.DataLoader(data, batch_size=size["batch"], collate_fn=collate, shuffle=True,
                                         generator=torch.Generator().manual_seed(0), drop_last=True)
    stamps = []
    for batch in loader:
        batch = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else
                     {t: x.to(device) for t, x in v.items()} if isinstance(v, dict) else v) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype):
            _, losses = task(batch)
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_()
        _sync(device)
        stamps.append(time.perf_counter())
        if len(stamps) > size["steps"]:
            break
    return _throughput(stamps, size["batch"])


class _Stamps(Callback):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter())


def trainer_loop(model: DualEncoder, data: MemoryImageText, size: dict[str, Any], precision: str,
                 device: torch.device) -> float:
    """Samples/s of ``Trainer.fit`` (one epoch of ``steps + 1`` optimizer steps) on the same work."""
    stamps = _Stamps(device)
    subset = torch.utils.data.Subset(data, range(size["batch"] * (size["steps"] + 1)))
    cfg = TrainConfig.model_validate({
        "epochs": 1, "batch_size": size["batch"], "precision": precision, "drop_last": True,
        "accelerator": "cuda" if device.type == "cuda" else "cpu", "validate_at_start": False,
        "logging": {"every_n_steps": 10, "progress_bar": False}, "schedule": {"kind": "constant"},
    })
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, Path(tmp), validation_hooks=[], callbacks=[stamps]).fit(
            model, build_objective(objective_config()), subset, collate_fn=collate)
    return _throughput(stamps.times, size["batch"])


def _throughput(stamps: list[float], batch: int) -> float:
    gaps = [b - a for a, b in itertools.pairwise(stamps[1:])]  # the first step warms up
    return batch / statistics.median(gaps)


def peak_memory(size: dict[str, Any], data: MemoryImageText, device: torch.device, **options: Any) -> float | None:
    """GB allocated at the peak of one bf16 training step (CUDA only)."""
    if device.type != "cuda":
        return None
    model = build(size, data, **options).to(device).train()
    task = TrainTask(model, build_objective(objective_config())).to(device)
    optimizer, _ = build_optimizer(task, TrainConfig().optimizer)
    batch = collate([data[i] for i in range(size["batch"])])
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else
                 {t: x.to(device) for t, x in v.items()} if isinstance(v, dict) else v) for k, v in batch.items()}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, losses = task(batch)
    losses["total"].backward()
    optimizer.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _best(fn: Any, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernels(n: int, dim: int, device: torch.device, repeats: int) -> list[tuple[str, float, float]]:
    """(name, medvl seconds, floor seconds) for retrieval, alignment and the probe solver."""
    from medvl.evaluation.alignment.sas import spectral_alignment_score
    from medvl.evaluation.embeddings import EmbeddingSet
    from medvl.evaluation.logistic import fit_logistic_batched
    from medvl.evaluation.retrieval import evaluate_retrieval

    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    emb = EmbeddingSet(image_emb=image.numpy(), text_emb=text.numpy(), caption_to_image=torch.arange(n).numpy(),
                       image_ids=[str(i) for i in range(n)])
    img_d, txt_d = image.to(device), text.to(device)
    out = []
    retrieval = _best(lambda: evaluate_retrieval(emb, device=device), repeats, device)
    floor = _best(lambda: (img_d @ txt_d.T, txt_d @ img_d.T), repeats, device)  # both directions' similarities
    out.append(("retrieval (both ways, exact ranks)", retrieval, floor))
    sas = _best(lambda: spectral_alignment_score(image.numpy(), text.numpy()), repeats, device)
    cov = _best(lambda: (img_d.T @ img_d, txt_d.T @ txt_d), repeats, device)
    out.append(("alignment SAS (vs its covariance matmuls)", sas, cov))
    classes = 10
    labels = torch.randint(0, classes, (n,), generator=g)
    fit: dict[str, Any] = {}

    def probe() -> None:
        fit["result"] = fit_logistic_batched(img_d[None], labels.to(device)[None], [1.0], classes)

    solver = _best(probe, repeats, device)
    weights = torch.zeros(dim, classes, device=device, dtype=torch.float64)
    x64 = img_d.double()
    step = _best(lambda: (x64 @ weights, x64.T @ (x64 @ weights)), repeats, device)  # the solver works in float64
    iterations = max(1, int(fit["result"].n_iter.max()))
    out.append((f"linear probe solver ({iterations} L-BFGS iterations)", solver, step * iterations))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a CPU smoke run of the same code on a tiny model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kernel-n", type=int, default=None, help="embeddings for the kernel checks")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    size = TINY if args.tiny else BASE
    data = MemoryImageText(size["records"], size["image_size"])
    base = build(size, data)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; "
          f"vision width {size['width']} × {size['depth']} blocks at {size['image_size']} px, batch {size['batch']}")
    for precision in ("bf16-mixed", "16-mixed"):
        bare = statistics.median(bare_loop(copy.deepcopy(base), data, size, precision, device)
                                 for _ in range(args.repeats))
        fit = statistics.median(trainer_loop(copy.deepcopy(base), data, size, precision, device)
                                for _ in range(args.repeats))
        print(f"{precision:>10}: bare {bare:8.1f} samples/s  trainer {fit:8.1f} samples/s  "
              f"time ratio trainer/bare {bare / fit:.3f}  (target <= 1.05)")
    for label, options in (("plain", {}), ("grad checkpointing", {"checkpointing": True}),
                           ("LoRA r=16 (vision)", {"lora": True})):
        gb = peak_memory(size, data, device, **options)
        print(f"peak memory, one bf16 step, {label:>18}: " + (f"{gb:.2f} GB" if gb is not None else "n/a (CPU)"))
    n = args.kernel_n or (512 if args.tiny else 50_000)
    for name, seconds, floor in kernels(n, 64 if args.tiny else 512, device, args.repeats):
        print(f"kernel {name}: {seconds * 1e3:.1f} ms, floor {floor * 1e3:.1f} ms, ratio {seconds / floor:.2f}")


if __name__ == "__main__":
    main()
