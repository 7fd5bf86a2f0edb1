"""Patch features of tiled slides, written as feature bags: batched, overlapped with reading, resumable.

For every ``<slide_id>.tiles.parquet`` (:mod:`medvl.slides.tiling`) the patches are read from the
slide (OpenSlide, or tifffile), resized to the model's input size when needed, normalised, and
encoded in batches by any image encoder medvl loads (:func:`medvl.models.loading.load_model`: a
medvl run or model directory, a Hugging Face, open_clip or timm directory). Reading runs in
``workers`` threads ahead of the encoder (OpenSlide and tifffile decode outside the GIL).

Output ``<out>/<slide_id>.safetensors``: ``features`` float32 — ``(M, T, d)`` region tokens when
regions hold several patches (T = R², row-major, the hierarchical slide encoder's input), else
``(M, d)`` — and ``coords`` (M·T, 2) int64 level-0 patch corners; the metadata records the model
identity, the tiling and the preprocessing (``medvl_fingerprint``). ``medvl data import slides``
turns a directory of these plus reports into a manifest.

Resuming: features are appended to ``.<slide_id>.partial.npy`` (a memory map); every
``checkpoint_seconds`` (5 s; 0 = every batch) it is flushed and the number of finished patches
written to ``.<slide_id>.partial.json`` (atomically, after the features), so a killed run
continues at the first batch not yet vouched for, in the first unfinished slide; finished slides
are skipped. A finished or partial file made with another model, tiling or preprocessing
is an error naming it (``overwrite`` starts that slide again). Results do not depend on where a
run was interrupted: batches are the same fixed slices of each slide's patch list.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from medvl.slides.reader import SlideReader, open_slide
from medvl.slides.tiling import TILES_SUFFIX, SlideTiles, TilingError, read_tiles
from medvl.utils.errors import UserInputError
from medvl.utils.hashing import hash_object
from medvl.utils.io import atomic_write_json

__all__ = ["EmbedOptions", "EmbeddingMismatchError", "embed_slide", "embed_tiles", "load_patch_encoder"]

FEATURES_KEY = "features"
COORDS_KEY = "coords"


class EmbeddingMismatchError(UserInputError, ValueError):
    """An existing (partial) feature file was made with another model, tiling or preprocessing."""


@dataclass(frozen=True)
class EmbedOptions:
    """How patches become features.

    ``output``: ``features`` (the backbone's pre-projection features, what patch encoders give) or
    ``embeds`` (the joint-space embedding). ``image_size``: side the patches are resized to (default:
    the tiling's ``patch_size``) and ``mean``/``std`` the normalisation after scaling to [0, 1]
    (medvl's data default is 0.5/0.5), both for medvl models; published families (Hugging Face,
    open_clip, timm) preprocess the decoded patches with their own processor.
    """

    batch_size: int = 64
    workers: int = 4
    """Reader threads ahead of the encoder; 0 = read each batch in the encoding thread."""
    device: str = "cpu"
    output: Literal["features", "embeds"] = "features"
    image_size: int | None = None
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    backend: str = "auto"
    trust_remote_code: bool = False
    checkpoint_seconds: float = 5.0
    """Progress is made durable (partial features flushed, count written) at most this often, and at
    the end of every slide: a kill loses at most this much work. 0 = after every batch."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0 or self.checkpoint_seconds < 0:
            raise UserInputError(f"embedding options: batch_size must be >= 1, workers and checkpoint_seconds "
                                 f">= 0 (got {self.batch_size}, {self.workers}, {self.checkpoint_seconds})")


@dataclass
class _Partial:
    done: int
    fingerprint: str
    n: int
    dim: int
    extra: dict[str, Any] = field(default_factory=dict)


def load_patch_encoder(spec: str | os.PathLike[str], device: str = "cpu", trust_remote_code: bool = False) -> Any:
    """The image encoder of ``spec`` through the model front door (:func:`medvl.models.loading.load_model`):
    a medvl run/model directory, a Hugging Face, open_clip or timm directory or hub id."""
    from medvl.models.loading import load_model

    return load_model(spec, device=device, trust_remote_code=trust_remote_code)


def _fingerprint(identity: dict[str, Any], tiles: SlideTiles, options: EmbedOptions, image_size: int) -> str:
    tiling = {k: tiles.meta.get(k) for k in ("patch_size", "region_size", "read_level", "read_size",
                                             "target_downsample", "n_patches")}
    return hash_object({
        "model": {k: v for k, v in identity.items() if k != "path"}, "tiling": tiling, "coords": hash_object(tiles.coords.tolist()),
        "output": options.output, "image_size": image_size, "mean": list(options.mean), "std": list(options.std),
    })


def _read_batch(reader: SlideReader, coords: np.ndarray, level: int, size: int) -> np.ndarray:
    out = np.empty((len(coords), size, size, 3), dtype=np.uint8)
    for i, (x, y) in enumerate(coords):
        out[i] = reader.read_region((int(x), int(y)), level, (size, size))
    return out


class _Preprocess:
    """uint8 patches (B, h, w, 3) → the model's input batch.

    Published families (``input_kind == "raw"``) get the decoded patches and preprocess them with
    their own processor; medvl models get (B, 3, S, S) tensors resized to ``image_size`` and
    normalised with ``mean``/``std`` (or the model's own deterministic transform when it has one).
    """

    def __init__(self, encoder: Any, options: EmbedOptions, image_size: int) -> None:
        self.raw = getattr(encoder, "input_kind", "tensor") == "raw"
        transform = getattr(encoder, "image_transform", None)
        self.model_transform = transform() if callable(transform) and not self.raw else None
        self.size = image_size
        self.mean = torch.tensor(options.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(options.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, patches: np.ndarray) -> dict[str, Any]:
        if self.raw:
            return {"images": list(patches)}
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        if self.model_transform is not None:
            return {"pixel_values": torch.stack([self.model_transform(image, None) for image in x])}
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return {"pixel_values": (x - self.mean) / self.std}


def _encode(encoder: Any, inputs: dict[str, Any], output: str) -> np.ndarray:
    with torch.no_grad():
        result = encoder.encode_images(inputs)
    key = "image_features" if output == "features" and "image_features" in result else "image_emb"
    return result[key].detach().to(torch.float32).cpu().numpy()


def _final_fingerprint(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("medvl_fingerprint")


def embed_slide(
    tiles: SlideTiles,
    encoder: Any,
    out_dir: Path,
    options: EmbedOptions,
    *,
    overwrite: bool = False,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed one tiled slide into ``out_dir`` (see the module docstring); returns what was done."""
    from safetensors.torch import save_file

    image_size = options.image_size or int(tiles.meta["patch_size"])
    fingerprint = _fingerprint(dict(encoder.identity), tiles, options, image_size)
    final = out_dir / f"{tiles.slide_id}.safetensors"
    partial_npy = out_dir / f".{tiles.slide_id}.partial.npy"
    partial_json = out_dir / f".{tiles.slide_id}.partial.json"
    n = len(tiles.coords)
    if final.is_file() and not overwrite:
        if _final_fingerprint(final) != fingerprint:
            raise EmbeddingMismatchError(f"{final} was embedded with another model, tiling or preprocessing; "
                                         "pass --overwrite to embed it again")
        return {"slide_id": tiles.slide_id, "status": "done before", "encoded": 0, "n_patches": n}
    if n == 0:
        raise TilingError(f"{tiles.slide_id}: the tiling kept no tissue region (lower --tissue-threshold?)")
    state: _Partial | None = None
    if partial_json.is_file() and partial_npy.is_file() and not overwrite:
        raw = json.loads(partial_json.read_text(encoding="utf-8"))
        state = _Partial(**raw)
        if state.fingerprint != fingerprint or state.n != n:
            raise EmbeddingMismatchError(f"{partial_json}: an interrupted run with another model, tiling or "
                                         "preprocessing; pass --overwrite to start this slide again")
    preprocess = _Preprocess(encoder, options, image_size)
    level, read_size = int(tiles.meta["read_level"]), int(tiles.meta["read_size"])
    bs = options.batch_size
    starts = list(range(0, n, bs))
    first = 0 if state is None else state.done // bs
    memmap: Any = None  # np.memmap of the partial features
    encoded = 0
    last_saved = time.monotonic()
    with open_slide(tiles.slide_path, backend=options.backend,  # type: ignore[arg-type]
                    mpp=tiles.meta.get("slide_mpp")) as reader, \
            ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        pending: dict[int, Future[np.ndarray]] = {}
        depth = options.workers + 1 if options.workers > 0 else 0  # batches read while one is encoded

        def submit(index: int) -> None:
            if index < len(starts) and index not in pending:
                lo = starts[index]
                if options.workers == 0:  # read in this thread, when the batch is needed
                    read: Future[np.ndarray] = Future()
                    read.set_result(_read_batch(reader, tiles.coords[lo:lo + bs], level, read_size))
                    pending[index] = read
                else:
                    pending[index] = pool.submit(_read_batch, reader, tiles.coords[lo:lo + bs], level, read_size)

        for index in range(first, len(starts)):
            for ahead in range(index, index + depth + 1):
                submit(ahead)
            patches = pending.pop(index).result()
            features = _encode(encoder, preprocess(patches), options.output)
            if memmap is None:
                dim = int(features.shape[1])
                if state is None:
                    memmap = np.lib.format.open_memmap(partial_npy, mode="w+", dtype=np.float32, shape=(n, dim))
                else:
                    memmap = np.load(partial_npy, mmap_mode="r+")
                    if memmap.shape != (n, dim):
                        raise EmbeddingMismatchError(f"{partial_npy}: shape {memmap.shape}, expected {(n, dim)}")
            lo = starts[index]
            memmap[lo:lo + len(features)] = features
            done = lo + len(features)
            if time.monotonic() - last_saved >= options.checkpoint_seconds and done < n:
                memmap.flush()  # the features first, then the count that vouches for them
                atomic_write_json(partial_json, asdict(_Partial(done=done, fingerprint=fingerprint, n=n,
                                                                dim=int(features.shape[1]))))
                last_saved = time.monotonic()
            encoded += len(features)
            if on_batch is not None:
                on_batch(tiles.slide_id, done, n)
    if memmap is None:  # everything was already in the partial file
        memmap = np.load(partial_npy, mmap_mode="r")
    t = int(tiles.meta["tokens_per_region"])
    values = np.array(memmap, dtype=np.float32)
    bag = values.reshape(n // t, t, -1) if t > 1 else values
    metadata = {"medvl_fingerprint": fingerprint, "slide_id": tiles.slide_id, "tokens_per_region": str(t),
                "model": json.dumps(dict(encoder.identity), default=str)[:4000],
                "tiling": json.dumps(tiles.meta, default=str)}
    tmp = final.with_name(f".{final.name}.tmp")
    save_file({FEATURES_KEY: torch.from_numpy(np.ascontiguousarray(bag)),
               COORDS_KEY: torch.from_numpy(np.ascontiguousarray(tiles.coords))}, str(tmp), metadata=metadata)
    os.replace(tmp, final)
    del memmap
    partial_npy.unlink(missing_ok=True)
    partial_json.unlink(missing_ok=True)
    return {"slide_id": tiles.slide_id, "status": "resumed" if state is not None else "embedded",
            "encoded": encoded, "n_patches": n, "shape": list(bag.shape)}


def embed_tiles(
    tiles_dir: str | os.PathLike[str],
    model: str | os.PathLike[str] | Any,
    out_dir: str | os.PathLike[str],
    options: EmbedOptions | None = None,
    *,
    slides: Sequence[str] | None = None,
    overwrite: bool = False,
    on_batch: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Embed every tiled slide of ``tiles_dir`` (or those in ``slides``) into ``out_dir``.

    ``model`` is a model spec (path) or an already loaded encoder. The tiles files are read and
    the model loaded before anything is written. Returns (and writes as ``embedding.json``) a
    summary with what each slide needed.
    """
    opts = options or EmbedOptions()
    source = Path(tiles_dir)
    files = sorted(source.glob(f"*{TILES_SUFFIX}"))
    if slides is not None:
        wanted = set(slides)
        files = [f for f in files if f.name[: -len(TILES_SUFFIX)] in wanted]
        missing = wanted - {f.name[: -len(TILES_SUFFIX)] for f in files}
        if missing:
            raise TilingError(f"no tiles file in {source} for slide(s) {sorted(missing)[:5]}")
    if not files:
        raise TilingError(f"{source}: no *{TILES_SUFFIX} files (run medvl slides tile first)")
    if opts.output not in ("features", "embeds"):
        raise ValueError(f"output must be features or embeds, got {opts.output!r}")
    tiled = [read_tiles(f) for f in files]
    for tiles in tiled:
        if not Path(tiles.slide_path).is_file():
            raise TilingError(f"{tiles.slide_id}: slide file {tiles.slide_path} not found (moved?)")
    encoder = (load_patch_encoder(model, opts.device, opts.trust_remote_code)
               if isinstance(model, (str, os.PathLike)) else model)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    results = []
    for tiles in tiled:
        result = embed_slide(tiles, encoder, target, opts, overwrite=overwrite, on_batch=on_batch)
        results.append(result)
        if log is not None:
            log(f"{tiles.slide_id}: {result['status']} ({result['encoded']} of {result['n_patches']} patches encoded)")
    summary = {"model": dict(encoder.identity), "options": asdict(opts), "slides": results,
               "encoded": sum(r["encoded"] for r in results)}
    atomic_write_json(target / "embedding.json", summary)
    return summary
