"""WebDataset shards of any manifest, and a DDP- and worker-aware streaming reader.

Writing (:func:`write_shards`) packs each record into a POSIX tar shard (``shard-000000.tar``,
…) as two members that share a key: ``<key>.json`` (the manifest row: id, texts, labels, masks,
group, split, fold, source, other columns) and ``<key>.<ext>`` (the referenced file's bytes,
e.g. ``jpg``, ``png``, ``dcm``, ``npy``, ``pt``, ``h5``). Keys are zero-padded positions, never
record ids (ids may contain dots or slashes, which WebDataset would split on). ``index.json``
lists the shards with their record counts, the task specs, the manifest hash and provenance.
Shards are written atomically (temp file + rename).

Reading (:class:`ShardStream`) needs no random access: shards are read sequentially. Each epoch
the shard list is permuted by ``(seed, epoch)`` (identically on every rank), then shard ``i``
is dealt to rank ``i mod world_size`` and, within the rank, to its workers in turn. Every record is therefore read exactly once per epoch
across all ranks and workers. Within a worker an optional seeded shuffle buffer mixes records.
Ranks can receive different numbers of records when shard counts do not divide evenly;
:meth:`ShardIndex.records_per_rank` tells how many, so a trainer can cap its steps.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset, get_worker_info

from medvl.data.manifest import Manifest, TaskSpec, as_list
from medvl.utils.io import atomic_open, atomic_write_json, read_json, to_jsonable

__all__ = ["INDEX_NAME", "ShardIndex", "ShardStream", "decode_image", "write_shards"]

INDEX_NAME = "index.json"
_FORMAT = "medvl-webdataset"
_VERSION = 1


@dataclass(frozen=True)
class ShardIndex:
    """The ``index.json`` of a shard directory."""

    directory: Path
    shards: tuple[str, ...]
    counts: tuple[int, ...]
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of records in all shards."""
        return int(sum(self.counts))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ShardIndex:
        """Read ``index.json`` (``path`` is the file or its directory)."""
        target = Path(path)
        if target.is_dir():
            target = target / INDEX_NAME
        if not target.is_file():
            raise FileNotFoundError(f"no shard index {target}; write shards with `medvl data shard`")
        data = read_json(target)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{target}: not a medvl shard index (format {data.get('format') if isinstance(data, dict) else None!r})")
        if int(data.get("version", 0)) > _VERSION:
            raise ValueError(f"{target}: shard format version {data['version']} is newer than supported {_VERSION}")
        shards = data["shards"]
        tasks = {t["name"]: TaskSpec.from_dict(t) for t in data.get("tasks", [])}
        return cls(target.parent, tuple(s["name"] for s in shards), tuple(int(s["count"]) for s in shards), tasks,
                   {k: v for k, v in data.items() if k not in ("shards", "tasks")})

    def assignment(self, world_size: int, num_workers: int, epoch: int = 0, seed: int = 0,
                   shuffle: bool = False) -> list[list[int]]:
        """Shard indices per global worker ``rank × num_workers + worker`` for an epoch.

        Shards are dealt to ranks first (``order[rank::world_size]``), then within a rank to its
        workers, so what a rank reads does not depend on its number of loader workers.
        """
        if world_size < 1 or num_workers < 1:
            raise ValueError(f"world_size and num_workers must be >= 1, got {world_size}, {num_workers}")
        order = np.arange(len(self.shards))
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self.shards))
        out: list[list[int]] = []
        for rank in range(world_size):
            mine = order[rank::world_size]
            out.extend(mine[w::num_workers].tolist() for w in range(num_workers))
        return out

    def records_per_rank(self, world_size: int, epoch: int = 0, seed: int = 0, shuffle: bool = False) -> list[int]:
        """Records each rank reads in an epoch (use the minimum to keep DDP ranks in step)."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
        return [int(sum(self.counts[i] for i in order[r::world_size])) for r in range(world_size)]


def _extension(path: str) -> str:
    name = Path(path).name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return double[1:]
    suffix = Path(name).suffix
    return suffix[1:] if suffix else "bin"


def _record_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, np.ndarray):
            value = as_list(value)
            value = [as_list(v) if isinstance(v, np.ndarray) else v for v in value]
        out[key] = value
    return cast(dict[str, Any], to_jsonable(out))


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible bytes
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shards(manifest: Manifest, out_dir: str | os.PathLike[str], shard_size: int = 1000, *,
                 split: str | None = None, on_bad_sample: Literal["error", "skip"] = "error",
                 prefix: str = "shard") -> ShardIndex:
    """Write ``manifest`` (optionally one split) as tar shards of ``shard_size`` records.

    Returns the :class:`ShardIndex`; ``index.json`` holds shard names and counts, the task specs,
    the manifest hash, the medvl version and the skipped records (``on_bad_sample="skip"``:
    records whose file is missing are left out and listed; ``error``: raise naming them).
    """
    import medvl

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if manifest.root is None:
        raise ValueError("manifest has no root; image paths cannot be resolved")
    if manifest.records.empty:
        raise ValueError("manifest has no records")
    records = manifest.records
    if split is not None:
        records = records.loc[records["split"] == split]
        if records.empty:
            raise ValueError(f"manifest has no records in split {split!r}")
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    stale = sorted(target.glob(f"{prefix}-*.tar"))
    if stale:
        raise FileExistsError(f"{target} already holds {len(stale)} shard(s) ({stale[0].name}, …); use an empty directory")
    types = manifest.image_types()[records.index.to_numpy()]
    skipped: list[dict[str, str]] = []

    def readable() -> Iterator[tuple[dict[str, Any], str, bytes]]:
        assert manifest.root is not None
        for row, image_type in zip(records.to_dict("records"), types, strict=True):
            path = manifest.root / str(row["image"])
            try:
                data = path.read_bytes()
            except OSError as exc:
                if on_bad_sample == "error":
                    raise FileNotFoundError(f"record {row['id']}: cannot read {path} ({exc}); "
                                            "use on_bad_sample=skip to leave such records out") from None
                skipped.append({"id": str(row["id"]), "reason": f"cannot read {row['image']}"})
                continue
            yield row, str(image_type), data

    shards: list[dict[str, Any]] = []
    stream = readable()
    position = 0
    while chunk := list(itertools.islice(stream, shard_size)):
        name = f"{prefix}-{len(shards):06d}.tar"
        with atomic_open(target / name, "wb", encoding=None) as handle, \
                tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for row, image_type, data in chunk:
                key = f"{position:09d}"
                record = _record_json(row)
                record["image_type"] = image_type
                _add_member(tar, f"{key}.json", json.dumps(record).encode("utf-8"))
                _add_member(tar, f"{key}.{_extension(str(row['image']))}", data)
                position += 1
        shards.append({"name": name, "count": len(chunk)})
    if not shards:
        raise ValueError(f"no record could be written (skipped: {len(skipped)})")
    index = {
        "format": _FORMAT, "version": _VERSION, "medvl_version": medvl.__version__,
        "manifest_hash": manifest.hash(), "split": split, "shard_size": shard_size,
        "total": sum(s["count"] for s in shards), "shards": shards,
        "tasks": [t.to_dict() for t in manifest.tasks.values()], "skipped": skipped,
    }
    atomic_write_json(target / INDEX_NAME, index)
    return ShardIndex.read(target)


def decode_image(data: bytes, image_type: str, ext: str, record_id: str | None = None,
                 channels: int | None = 3) -> torch.Tensor:
    """Decode a shard member with :mod:`medvl.data.images`: images → (C, H, W) in [0, 1],
    feature bags → (n_regions, d)."""
    from medvl.data.images import load_feature_bag, load_image

    if image_type == "feature_bag":
        with tempfile.TemporaryDirectory() as tmp:  # bag loaders dispatch on the file extension
            path = Path(tmp) / f"bag.{ext}"
            path.write_bytes(data)
            return load_feature_bag(path, record_id)
    return load_image(cast(Any, io.BytesIO(data)), image_type, record_id, channels=channels)


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ShardStream(IterableDataset[dict[str, Any]]):
    """Stream records from shards: exactly once per epoch across ranks × workers.

    Args:
        index: a :class:`ShardIndex` or the shard directory / ``index.json`` path.
        shuffle: permute shards per epoch and mix records in a buffer.
        seed: base seed (shard order uses ``(seed, epoch)``; the buffer adds the worker).
        shuffle_buffer: records held by the in-worker shuffle buffer.
        rank, world_size: default from ``torch.distributed`` (or ``RANK``/``WORLD_SIZE``).
        decode: ``True`` decodes the file into a tensor (``image``), ``False`` keeps the bytes
            (``data``), or a callable ``sample -> sample``.
        split: only yield records of this split.
        items: yield dataset items instead (the same dicts as
            :class:`medvl.data.dataset.ImageTextDataset` returns, so
            :func:`medvl.data.dataset.collate` makes the contract batch): ``pixel_values`` (after
            ``transform``) or ``bag``, one seeded caption (``train=True``) or all of them, and
            ``labels``/``label_mask`` for ``tasks`` (default: all tasks of the index). ``index``
            is the record's position in the sharded manifest.
        train, transform, tasks, caption_mode: as for ``ImageTextDataset`` (items mode only).

    Items are dicts: ``id``, ``record`` (the manifest row), ``image_type``, ``ext`` and
    ``image`` (decoded tensor) or ``data`` (bytes); or dataset items with ``items=True``.
    """

    def __init__(self, index: ShardIndex | str | os.PathLike[str], *, shuffle: bool = False, seed: int = 0,
                 shuffle_buffer: int = 1000, rank: int | None = None, world_size: int | None = None,
                 decode: bool | Callable[[dict[str, Any]], dict[str, Any]] = True, split: str | None = None,
                 channels: int | None = 3, items: bool = False, train: bool = True,
                 transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
                 tasks: Sequence[str] | None = None, caption_mode: Literal["random", "first"] = "random") -> None:
        self.index = index if isinstance(index, ShardIndex) else ShardIndex.read(index)
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, max(1, shuffle_buffer)
        self._rank, self._world = rank, world_size
        self.decode, self.split, self.channels = decode, split, channels
        self.items, self.train, self.transform, self.caption_mode = items, train, transform, caption_mode
        self.tasks = list(self.index.tasks) if tasks is None else list(tasks)
        unknown = [t for t in self.tasks if t not in self.index.tasks]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; the shards have {sorted(self.index.tasks)}")
        if items and decode is not True:
            raise ValueError("items=True needs decode=True")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard order and buffer shuffling depend on it)."""
        self.epoch = int(epoch)

    def _position(self) -> tuple[int, int, int, int]:
        rank, world = _dist_rank_world()
        rank = self._rank if self._rank is not None else rank
        world = self._world if self._world is not None else world
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def my_shards(self) -> list[str]:
        """Shard names this (rank, worker) reads in the current epoch."""
        rank, world, worker, workers = self._position()
        assignment = self.index.assignment(world, workers, self.epoch, self.seed, self.shuffle)
        return [self.index.shards[i] for i in assignment[rank * workers + worker]]

    def _samples(self, names: Sequence[str]) -> Iterator[dict[str, Any]]:
        from webdataset.tariterators import group_by_keys, tar_file_expander

        for name in names:
            path = self.index.directory / name
            with path.open("rb") as handle:
                raw = [self._to_item(sample, name)
                       for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": handle}]))]
            if self.split is not None:
                raw = [item for item in raw if item["record"].get("split") == self.split]
            if self.items:
                yield from self._dataset_items(raw)
            else:
                yield from raw

    def _dataset_items(self, raw: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Dataset items of one shard; labels converted in bulk with the manifest's own readers."""
        from medvl.data.dataset import _item_seed
        from medvl.data.manifest import Manifest

        if not raw:
            return
        manifest = Manifest(pd.DataFrame([item["record"] for item in raw]), {t: self.index.tasks[t] for t in self.tasks})
        labels = {t: manifest.label_matrix(t) for t in self.tasks}
        masks = {t: manifest.label_mask(t) for t in self.tasks}
        for row, item in enumerate(raw):
            index = int(item["key"])
            seq = _item_seed(self.seed, self.epoch, index)
            rng = np.random.default_rng(seq)
            generator = torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))
            record, data = item["record"], item["image"]
            out: dict[str, Any] = {"id": item["id"], "index": index}
            if item["image_type"] == "feature_bag":
                out["bag"] = data
            else:
                out["pixel_values"] = self.transform(data, generator) if self.transform is not None else data
            texts = [str(t) for t in record.get("texts") or []]
            if self.train:
                k = -1 if not texts else 0 if self.caption_mode == "first" else int(rng.integers(len(texts)))
                out["text"], out["text_index"] = (texts[k] if k >= 0 else ""), k
                per_text = {t: record.get(f"text_labels.{t}") for t in self.tasks}
                if k >= 0 and any(v is not None for v in per_text.values()):
                    out["text_labels"] = {t: torch.as_tensor(v[k], dtype=torch.float32)
                                          for t, v in per_text.items() if v is not None}
            else:
                out["texts"] = texts
            out["labels"] = {t: torch.as_tensor(labels[t][row]) for t in self.tasks}
            out["label_mask"] = {t: torch.as_tensor(masks[t][row]) for t in self.tasks}
            yield out

    def _to_item(self, sample: dict[str, Any], shard: str) -> dict[str, Any]:
        if "json" not in sample:
            raise ValueError(f"{shard}: sample {sample.get('__key__')} has no .json member")
        record = json.loads(sample["json"])
        exts = [k for k in sample if not k.startswith("__") and k != "json"]
        if len(exts) != 1:
            raise ValueError(f"{shard}: record {record.get('id')} has {len(exts)} file members ({exts})")
        ext = exts[0]
        item: dict[str, Any] = {"id": record["id"], "key": sample["__key__"], "record": record,
                                "image_type": record.get("image_type", ""), "ext": ext, "data": sample[ext]}
        if callable(self.decode):
            return self.decode(item)
        if self.decode:
            item["image"] = decode_image(item.pop("data"), item["image_type"], ext, record["id"], self.channels)
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, _, worker, _ = self._position()
        items: Iterator[dict[str, Any]] = self._samples(self.my_shards())
        if not self.shuffle:
            yield from items
            return
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        buffer: list[dict[str, Any]] = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], item = item, buffer[j]
            yield item
        rng.shuffle(cast(Any, buffer))
        yield from buffer

    def __len__(self) -> int:
        """Records this rank reads in the current epoch (all its workers together; ignores ``split``)."""
        rank, world, _, _ = self._position()
        return self.index.records_per_rank(world, self.epoch, self.seed, self.shuffle)[rank]
