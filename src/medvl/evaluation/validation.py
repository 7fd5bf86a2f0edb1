"""Per-epoch validation through the evaluation suite, so training curves and final numbers agree.

:func:`validation_metrics` computes the tasks of ``EvaluationConfig.validation`` (retrieval and
classification-head metrics by default) with the very functions ``medvl evaluate`` uses, and
names them the same way (``retrieval/i2t/recall@1``, ``classification/<task>/accuracy``); the
trainer logs them with a ``val/`` prefix. :func:`build_validation_hooks` is the hook factory that
``medvl train`` and the sweeps hand to :func:`medvl.training.run.run_training`. In a multi-process
run the processes share the encoding out batch by batch and sum the embeddings
(:mod:`medvl.evaluation.sharded`), so every process holds the whole split's embeddings,
bit-identical to a single process's, and logs identical numbers.
"""

from __future__ import annotations

from typing import Any

from medvl.config.evaluation import EvaluationConfig
from medvl.evaluation.embeddings import EmbeddingSet

__all__ = ["EvaluationValidationHook", "build_validation_hooks", "validation_metrics"]


def validation_metrics(
    source: Any,
    cfg: EvaluationConfig | None = None,
    *,
    dataset: Any = None,
    batch_size: int | None = None,
    fabric: Any = None,
) -> dict[str, float]:
    """Flat ``{"<task>/<metric>": value}`` for an EmbeddingSet, or a model (DualEncoder) + eval dataset.

    ``fabric``: a launched multi-process Fabric; the extraction is then shared out over its processes
    (every process must call this with the same dataset).
    """
    from medvl.evaluation.extraction import extract_embeddings
    from medvl.evaluation.suite import evaluate_embeddings
    from medvl.models.loading import MedvlModel

    cfg = cfg or EvaluationConfig()
    if isinstance(source, EmbeddingSet):
        emb = source
    else:
        if dataset is None:
            raise ValueError("validation_metrics needs an evaluation-mode dataset when given a model")
        bs = batch_size or cfg.validation.batch_size or cfg.batch_size
        encoder: Any = MedvlModel(source)
        world = getattr(fabric, "world_size", 1)
        if world > 1 and _shards_parameters(fabric):
            world = 1  # FSDP: every forward gathers parameters, so every process encodes every batch
        if world > 1:
            from medvl.evaluation.sharded import BatchShardedEncoder, reduce_embedding_set

            encoder = BatchShardedEncoder(encoder, fabric.global_rank, world, fabric.device)
        emb = extract_embeddings(encoder, dataset, batch_size=bs, progress=False)
        if world > 1:
            emb = reduce_embedding_set(emb, fabric.device, lambda t: fabric.all_reduce(t, reduce_op="sum"))
    sub = cfg.model_copy(update={"tasks": list(cfg.validation.tasks)})
    results = evaluate_embeddings(emb, sub)
    return {f"{task}/{name}": float(v) for task, res in results.items() for name, v in res["metrics"].items()}


def _shards_parameters(fabric: Any) -> bool:
    from medvl.training.sharding import is_sharded

    return is_sharded(fabric)


class EvaluationValidationHook:
    """Trainer hook: :func:`validation_metrics` of the model on the validation split."""

    def __init__(self, dataset: Any, cfg: EvaluationConfig, batch_size: int) -> None:
        self.dataset = dataset
        self.cfg = cfg
        self.batch_size = batch_size

    def __call__(self, ctx: Any) -> dict[str, float]:
        if self.dataset is None or len(self.dataset) == 0:
            return {}
        was_training = ctx.model.training
        try:
            return validation_metrics(ctx.model, self.cfg, dataset=self.dataset, batch_size=self.batch_size,
                                      fabric=getattr(ctx, "fabric", None))
        finally:
            ctx.model.train(was_training)


def build_validation_hooks(run_cfg: Any, val_set: Any) -> list[EvaluationValidationHook]:
    """Hooks for a training run (``RunConfig``): none without a validation split."""
    if val_set is None:
        return []
    section = getattr(run_cfg, "evaluation", None)
    if section is None:
        cfg = EvaluationConfig()
    elif isinstance(section, EvaluationConfig):
        cfg = section
    else:
        cfg = EvaluationConfig.model_validate(section)
    if not cfg.validation.tasks:
        return []
    bs = cfg.validation.batch_size or getattr(getattr(run_cfg, "training", None), "batch_size", None) or cfg.batch_size
    return [EvaluationValidationHook(val_set, cfg, int(bs))]
