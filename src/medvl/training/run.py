"""A whole training run from a :class:`~medvl.config.training.RunConfig` (what ``medvl train`` does).

Run directory layout::

    RUN_DIR/
      config.yaml            the fully resolved run config
      model/                 DualEncoder.save_pretrained of the initial model: config.json,
                             tower assets (HF configs, the trained tokenizer), initial weights
      checkpoints/           see medvl.training.checkpoint (best/last pointers, safetensors + JSON)
      logs/                  steps / epochs / grad_probe JSONL + CSV (medvl.training.logging)
      data.json              the data's fingerprint (manifest content hash, image files), compared on --resume
      .medvl.lock            the run's lock while a process writes it (medvl.utils.rundir)
      training_result.json   status, best and last checkpoints, provenance, skipped records

Per-epoch evaluation metrics (retrieval, classification) come from the caller: ``medvl train`` and
the sweeps pass :func:`medvl.evaluation.validation.build_validation_hooks` as ``hook_factory``, so
the training package never imports the evaluation package. Loading the trained model back is
:func:`medvl.models.loading.load_trained_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medvl import __version__
from medvl.config.loading import ConfigError
from medvl.config.training import RunConfig
from medvl.models.loading.medvl import MODEL_DIR
from medvl.training.callbacks import Callback, ObjectiveValidation, ValidationHook
from medvl.training.checkpoint import resolve_checkpoint
from medvl.training.trainer import FitResult, Trainer
from medvl.utils.errors import UserInputError
from medvl.utils.hashing import hash_object
from medvl.utils.rundir import prepare_run_dir

__all__ = [
    "DATA_FILE",
    "MODEL_DIR",
    "RESUME_MUTABLE_KEYS",
    "HookFactory",
    "TrainingData",
    "check_resume_config",
    "check_resume_data",
    "prepare_training_data",
    "run_training",
]

#: ``factory(run_config, val_set) -> hooks``: per-epoch validation hooks built from the evaluation-mode
#: validation set (None when the run has no validation split).
HookFactory = Callable[[RunConfig, Any], Sequence[ValidationHook]]
#: The run's data fingerprint (manifest content hash, image-file fingerprints), compared by ``--resume``.
DATA_FILE = "data.json"
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


def check_resume_config(saved: dict[str, Any], current: RunConfig, *, data_checked: bool = False) -> None:
    """Refuse to resume when a setting that shapes the run changed (other than :data:`RESUME_MUTABLE_KEYS`).

    With ``data_checked`` (the run's data fingerprint is compared instead, :func:`check_resume_data`),
    the manifest's path and root may change too: a moved dataset with the same content resumes.
    """
    mutable = RESUME_MUTABLE_KEYS + (("data.manifest", "data.root") if data_checked else ())
    old, new = _flatten(saved), _flatten(current.model_dump(mode="json"))
    changed = sorted(
        key for key in set(old) | set(new)
        if old.get(key) != new.get(key) and not any(key == m or key.startswith(m + ".") for m in mutable)
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


@dataclass
class TrainingData:
    """The validated data of a run: datasets and the fingerprint a ``--resume`` compares."""

    manifest: Any
    train_set: Any
    val_set: Any
    val_loss_set: Any
    fingerprint: dict[str, Any]
    objective: Any


def _check_tasks(cfg: RunConfig, tasks: dict[str, Any]) -> None:
    """Every task the model heads and objective terms name exists in the manifest, with matching sizes."""
    known = sorted(tasks)
    for i, term in enumerate(cfg.objective.terms):
        task = (term.options or {}).get("task")
        if task is not None and task not in tasks:
            raise ConfigError(f"objective.terms.{i}.options.task: {task!r} is not a task of {cfg.data.manifest} "
                              f"(tasks: {known})")
    for name, head in cfg.model.classifiers.items():
        if name not in tasks:
            raise ConfigError(f"model.classifiers.{name}: {name!r} is not a task of {cfg.data.manifest} (tasks: {known})")
        spec = tasks[name]
        if head.num_classes is not None and spec.kind in ("multilabel", "multiclass") \
                and head.num_classes != spec.num_classes:
            raise ConfigError(f"model.classifiers.{name}.num_classes: {head.num_classes}, but task {name!r} of "
                              f"{cfg.data.manifest} has {spec.num_classes} classes")
    if cfg.model.prototype is not None and cfg.model.prototype.task not in tasks:
        raise ConfigError(f"model.prototype.task: {cfg.model.prototype.task!r} is not a task of "
                          f"{cfg.data.manifest} (tasks: {known})")


def prepare_training_data(cfg: RunConfig) -> TrainingData:
    """Read and check everything the run needs from the data, writing nothing.

    Raises a :class:`~medvl.utils.errors.UserInputError` naming the file, record or key for a
    missing manifest, an empty split or fold, an unknown task, bad records (unless skipped) and
    a split whose every record was skipped.
    """
    from medvl.data.dataset import ImageTextDataset, select_split
    from medvl.data.fingerprint import files_fingerprint
    from medvl.data.manifest import read_manifest
    from medvl.data.transforms import build_transforms
    from medvl.objectives import build_objective

    objective = build_objective(cfg.objective)
    # a second augmented view is made only when a term reads one (SimCLR); other runs pay nothing
    two_views = objective.needs_second_view()
    if two_views and cfg.model.view_projection is None:
        raise ConfigError("objective: a term needs a second augmented view (simclr) but model.view_projection "
                          "is null; add model.view_projection (the unimodal projector ξ)")
    manifest = read_manifest(cfg.data.manifest, root=cfg.data.root)
    unknown = [t for t in cfg.data.tasks or [] if t not in manifest.tasks]
    if unknown:
        raise ConfigError(f"data.tasks: {unknown} not tasks of {cfg.data.manifest} (tasks: {sorted(manifest.tasks)})")
    train_set = ImageTextDataset.from_config(select_split(manifest, cfg.data, "train"), cfg.data,
                                             train=True, seed=cfg.seed, second_view=two_views)
    if train_set.n_source_records == 0:
        raise ConfigError(f"data: the {cfg.data.train_split!r} split of {cfg.data.manifest} is empty"
                          + (f" for fold {cfg.data.fold}" if cfg.data.fold is not None else ""))
    train_set.check_not_all_skipped("training split")
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
        val_set.share_skips(val_loss_set)  # one record of skips per split
        val_set.check_not_all_skipped("validation split")
    _check_tasks(cfg, {name: manifest.task(name) for name in train_set.task_names})
    _check_dataset_negatives(cfg, train_set)
    mode = cfg.data.file_fingerprint
    fingerprint = {
        "manifest": str(cfg.data.manifest),
        "manifest_hash": manifest.hash(),
        "file_fingerprint": mode,
        "files": {"train": files_fingerprint(train_set.manifest, mode),
                  "val": None if val_set is None else files_fingerprint(val_set.manifest, mode)},
        "n_train": len(train_set),
        "n_val": 0 if val_set is None else len(val_set),
    }
    return TrainingData(manifest, train_set, val_set, val_loss_set, fingerprint, objective)


def check_resume_data(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume when the data the run trained on changed (manifest content or image files)."""
    restore = ("restore the data, or start a new run (--overwrite, or another --out)")
    if saved.get("manifest_hash") != current["manifest_hash"]:
        raise ConfigError(
            f"cannot --resume {run_dir}: the manifest's content changed since the run started "
            f"(content hash {str(saved.get('manifest_hash'))[:12]}… in {run_dir / DATA_FILE}, now "
            f"{current['manifest_hash'][:12]}… for {current['manifest']}); epochs would mix old and new data; "
            + restore)
    if saved.get("file_fingerprint") == current["file_fingerprint"]:
        for split in ("train", "val"):
            if (saved.get("files") or {}).get(split) != current["files"][split]:
                what = "size or modification time" if current["file_fingerprint"] == "stat" else "content"
                raise ConfigError(
                    f"cannot --resume {run_dir}: image files of the {split} split changed since the run started "
                    f"(the {what} of at least one of its {current['n_' + split]} files differs; "
                    f"data.file_fingerprint={current['file_fingerprint']}); " + restore)


def _start_run_dir(cfg: RunConfig, target: Path, data: TrainingData, *, resume: bool, overwrite: bool) -> None:
    """Checks that need the run directory, then its first writes (process 0, under the run's lock)."""
    from medvl.config.loading import save_resolved_config
    from medvl.training.checkpoint import verify_checkpoint
    from medvl.utils.io import atomic_write_json, read_json

    saved_config = target / "config.yaml"
    if resume and saved_config.is_file():
        try:
            saved = yaml.safe_load(saved_config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{saved_config}: corrupt run config ({exc})") from None
        saved_data = None
        if (target / DATA_FILE).is_file():
            try:
                saved_data = read_json(target / DATA_FILE)
            except ValueError as exc:
                raise ConfigError(f"{target / DATA_FILE}: corrupt data fingerprint ({exc})") from None
        # with a content fingerprint to compare, the manifest may move; without (older runs), its path counts
        check_resume_config(saved, cfg, data_checked=saved_data is not None)
        if saved_data is not None:
            check_resume_data(saved_data, data.fingerprint, target)
    if resume and (target / "checkpoints" / "last.json").is_file():
        verify_checkpoint(resolve_checkpoint(target, "last"))  # a corrupt checkpoint fails before any write
    prepare_run_dir(target, overwrite=overwrite, resume=resume)
    save_resolved_config(cfg, target)
    atomic_write_json(target / DATA_FILE, data.fingerprint)


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

    Order: the run directory's state is checked, then the config and the data (nothing written
    yet, so a corrected command or ``--resume`` works after any such error); then process 0 takes
    the directory's lock (held until the run ends; a second run on the same directory is refused,
    naming the holder), re-checks a resume (config, data fingerprint, checkpoint files) and writes.

    Multi-process: launch under ``torchrun`` or set ``training.devices`` (Fabric's launcher);
    process 0 prepares the directory and writes shared files.
    """
    from medvl.training.fabric_setup import build_fabric
    from medvl.utils.rundir import RunDirLock, check_run_dir
    from medvl.utils.seeding import seed_everything

    target = Path(run_dir)
    fabric = build_fabric(cfg.training)
    check_run_dir(target, overwrite=overwrite, resume=resume)
    seed_everything(cfg.seed)
    data = prepare_training_data(cfg)
    lock = RunDirLock(target) if fabric.is_global_zero else None
    error: UserInputError | None = None
    if lock is not None:
        try:
            lock.acquire()
            _start_run_dir(cfg, target, data, resume=resume, overwrite=overwrite)
        except UserInputError as exc:
            lock.release(remove_if_empty=True)
            error = exc
    if fabric.world_size > 1:  # every process stops together on an error found by process 0
        message = fabric.broadcast(None if error is None else str(error), src=0)
        if message is not None and error is None:
            raise UserInputError(message)
    if error is not None:
        raise error
    fabric.barrier()
    try:
        return _train(cfg, target, data, fabric, resume=resume, validation_hooks=validation_hooks,
                      hook_factory=hook_factory, callbacks=callbacks)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: RunConfig, target: Path, data: TrainingData, fabric: Any, *, resume: bool,
           validation_hooks: Sequence[ValidationHook] | None, hook_factory: HookFactory | None,
           callbacks: Sequence[Callback]) -> FitResult:
    """Build the model and objective and fit (the run directory is prepared and locked)."""
    import torch

    from medvl.data.dataset import collate
    from medvl.models import build_model
    from medvl.objectives import GradientProbe

    resuming = resume and (target / "checkpoints" / "last.json").is_file()
    train_set, val_set, val_loss_set, objective = data.train_set, data.val_set, data.val_loss_set, data.objective

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
        if model.needs_tokenizer_training():  # fresh, or started from a run without this text tower
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
        "manifest_hash": data.fingerprint["manifest_hash"],
        "file_fingerprint": {"mode": data.fingerprint["file_fingerprint"], **data.fingerprint["files"]},
        "n_train": len(train_set),
        "n_val": len(val_set) if val_set is not None else 0,
        "seed": cfg.seed,
    }
    trainer = Trainer(cfg.training, target, seed=cfg.seed, fabric=fabric, validation_hooks=hooks,
                      provenance=provenance, gradient_probe=probe, callbacks=callbacks)
    return trainer.fit(model, objective, train_set, val_loss_set, collate_fn=collate, resume=resume)

