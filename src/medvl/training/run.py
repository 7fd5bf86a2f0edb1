"""A whole training run from a :class:`~medvl.config.training.RunConfig` (what ``medvl train`` does).

Run directory layout::

    RUN_DIR/
      config.yaml            the fully resolved run config
      model/                 DualEncoder.save_pretrained of the initial model: config.json,
                             tower assets (HF configs, the trained tokenizer), initial weights
      checkpoints/           see medvl.training.checkpoint (best/last pointers, safetensors + JSON)
      logs/                  steps / epochs / grad_probe JSONL + CSV (medvl.training.logging)
      training_result.json   status, best and last checkpoints, provenance

Per-epoch evaluation metrics (retrieval, classification) come from the caller: ``medvl train`` and
the sweeps pass :func:`medvl.evaluation.validation.build_validation_hooks` as ``hook_factory``, so
the training package never imports the evaluation package. Loading the trained model back is
:func:`medvl.models.loading.load_trained_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from medvl import __version__
from medvl.config.loading import ConfigError
from medvl.config.training import RunConfig
from medvl.models.loading.medvl import MODEL_DIR
from medvl.training.callbacks import Callback, ObjectiveValidation, ValidationHook
from medvl.training.trainer import FitResult, Trainer
from medvl.utils.hashing import hash_object

__all__ = ["MODEL_DIR", "RESUME_MUTABLE_KEYS", "HookFactory", "check_resume_config", "run_training"]

#: ``factory(run_config, val_set) -> hooks``: per-epoch validation hooks built from the evaluation-mode
#: validation set (None when the run has no validation split).
HookFactory = Callable[[RunConfig, Any], Sequence[ValidationHook]]
#: Config keys that may differ between a run and its ``--resume`` (prefix match on dotted paths).
RESUME_MUTABLE_KEYS: tuple[str, ...] = (
    "training.epochs",
    "training.logging",
    "training.checkpoint.every_n_steps",
    "training.num_workers",
    "training.pin_memory",
    "training.early_stopping",
    "training.val_every_n_epochs",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def check_resume_config(saved: dict[str, Any], current: RunConfig) -> None:
    """Refuse to resume when a setting that shapes the run changed (other than :data:`RESUME_MUTABLE_KEYS`)."""
    old, new = _flatten(saved), _flatten(current.model_dump(mode="json"))
    changed = sorted(
        key for key in set(old) | set(new)
        if old.get(key) != new.get(key) and not any(key == m or key.startswith(m + ".") for m in RESUME_MUTABLE_KEYS)
    )
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:10])
        raise ConfigError(f"cannot --resume: the config differs from the run's config.yaml in {details}")


def _check_dataset_negatives(cfg: RunConfig, train_set: Any) -> None:
    """Records without any admissible dataset negative are an error up front for terms that would raise."""
    strict = [t.name for _, t in cfg.objective.dataset_negative_terms()
              if t.options.get("on_missing_negative", "error") == "error"]
    missing = train_set.records_without_negative()
    if strict and missing:
        shown = ", ".join(missing[:10]) + (f" … and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ConfigError(
            f"data.negatives: {len(missing)} training record(s) have no record with a different "
            f"{cfg.data.negatives.task!r} label in another group to draw a negative from: {shown}. Fix their "
            f"labels/groups, or set on_missing_negative: warn for term(s) {strict}"
        )


def run_training(
    cfg: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    validation_hooks: Sequence[ValidationHook] | None = None,
    hook_factory: HookFactory | None = None,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``cfg`` into ``run_dir`` (see the module docstring); resume its last checkpoint when asked.

    Validation: the objective's loss on the validation split, plus ``hook_factory(cfg, val_set)``
    (e.g. the evaluation suite's retrieval/classification hooks); ``validation_hooks`` replaces
    both with the hooks given.

    Multi-process: launch under ``torchrun`` or set ``training.devices`` (Fabric's launcher);
    process 0 prepares the directory and writes shared files.
    """
    import torch

    from medvl.config.loading import save_resolved_config
    from medvl.data.dataset import ImageTextDataset, collate, select_split
    from medvl.data.manifest import read_manifest
    from medvl.data.transforms import build_transforms
    from medvl.models import build_model
    from medvl.objectives import GradientProbe, build_objective
    from medvl.training.fabric_setup import build_fabric
    from medvl.utils.rundir import prepare_run_dir
    from medvl.utils.seeding import seed_everything

    target = Path(run_dir)
    fabric = build_fabric(cfg.training)
    saved_config = target / "config.yaml"
    if fabric.is_global_zero:
        if resume and saved_config.is_file():
            check_resume_config(yaml.safe_load(saved_config.read_text(encoding="utf-8")) or {}, cfg)
        prepare_run_dir(target, overwrite=overwrite, resume=resume)
        save_resolved_config(cfg, target)
    fabric.barrier()
    resuming = resume and (target / "checkpoints" / "last.json").is_file()

    seed_everything(cfg.seed)
    objective = build_objective(cfg.objective)
    # a second augmented view is made only when a term reads one (SimCLR); other runs pay nothing
    two_views = objective.needs_second_view()
    if two_views and cfg.model.view_projection is None:
        raise ConfigError("objective: a term needs a second augmented view (simclr) but model.view_projection "
                          "is null; add model.view_projection (the unimodal projector ξ)")
    manifest = read_manifest(cfg.data.manifest, root=cfg.data.root)
    train_set = ImageTextDataset.from_config(select_split(manifest, cfg.data, "train"), cfg.data,
                                             train=True, seed=cfg.seed, second_view=two_views)
    val_manifest = select_split(manifest, cfg.data, "val")
    val_set = val_loss_set = None
    if len(val_manifest):
        # evaluation form (every caption, caption_to_image) for the evaluation suite's hooks ...
        val_set = ImageTextDataset.from_config(val_manifest, cfg.data, train=False, seed=cfg.seed)
        # ... and the objective's form (one caption per image, fixed by the seed) for the validation
        # loss, with the deterministic evaluation transforms: no augmentation in validation.
        # (SimCLR's second view stays augmented, seeded by the fixed validation epoch.)
        val_loss_set = ImageTextDataset.from_config(val_manifest, cfg.data, train=True, seed=cfg.seed,
                                                    transform=build_transforms(cfg.data, train=False),
                                                    second_view=two_views)
        val_loss_set.max_regions = None
    if len(train_set) == 0:
        raise ConfigError(f"data: the {cfg.data.train_split!r} split of {cfg.data.manifest} is empty")
    _check_dataset_negatives(cfg, train_set)

    # The model directory fixes tower assets (e.g. a tokenizer trained on this run's corpus), so a
    # resumed run, or a run started from another run's weights, tokenises exactly the same way.
    assets: Path | None = None
    init = cfg.training.init_weights
    if resuming and (target / MODEL_DIR / "config.json").is_file():
        assets = target / MODEL_DIR
    elif init is not None and (Path(init) / MODEL_DIR / "config.json").is_file():
        assets = Path(init) / MODEL_DIR
    model_dir = target / MODEL_DIR
    if fabric.is_global_zero and not (resuming and assets is not None):
        model = build_model(cfg.model, assets_dir=assets)
        if assets is None and model.needs_tokenizer_training():
            texts, _ = train_set.captions()
            model.train_tokenizer(texts)
        model.save_pretrained(model_dir)
    fabric.barrier()
    if not fabric.is_global_zero or (resuming and assets is not None):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, assets_dir=model_dir)

    probe_cfg = cfg.objective.gradient_probe
    probe = GradientProbe.from_config(probe_cfg) if probe_cfg.every_n_steps > 0 else None
    if validation_hooks is not None:
        hooks = list(validation_hooks)
    else:
        hooks = [ObjectiveValidation()]
        if hook_factory is not None:
            hooks.extend(hook_factory(cfg, val_set))
    provenance = {
        "medvl_version": __version__,
        "config": cfg.model_dump(mode="json"),
        "config_hash": hash_object(cfg.model_dump(mode="json")),
        "manifest": str(cfg.data.manifest),
        "manifest_hash": manifest.hash(),
        "n_train": len(train_set),
        "n_val": len(val_set) if val_set is not None else 0,
        "seed": cfg.seed,
    }
    trainer = Trainer(cfg.training, target, seed=cfg.seed, fabric=fabric, validation_hooks=hooks,
                      provenance=provenance, gradient_probe=probe, callbacks=callbacks)
    return trainer.fit(model, objective, train_set, val_loss_set, collate_fn=collate, resume=resume)

