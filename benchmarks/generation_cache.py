"""Caption generation with and without the decoder's key/value cache (``medvl.models.generation``).

Without the cache every new token re-runs the decoder over the whole prefix (O(t²) work per
caption); with it each step runs one position against the cached keys/values (O(t)). Both paths
run here on the same randomly initialised CoCa decoder, images, thread count and lengths (the
EOS id is one the model never emits, so every caption has exactly ``--length`` tokens), interleaved
and best of ``--repeats``; the captions must be identical.

    .venv/bin/python -m benchmarks.generation_cache                       # ~1 min here
    .venv/bin/python -m benchmarks.generation_cache --length 128 --width 256 --layers 4 --method beam
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import best_of
from medvl.config.model import TinyDecoderConfig
from medvl.models.decoder import TinyCaptionDecoder
from medvl.models.generation import generate_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=96, help="caption tokens (BOS excluded)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2, help="unimodal and multimodal layers each")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--image-tokens", type=int, default=65)
    ap.add_argument("--method", choices=["greedy", "beam"], default="greedy")
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TinyDecoderConfig(width=args.width, heads=4, unimodal_layers=args.layers, multimodal_layers=args.layers,
                            max_length=args.length + 1)
    decoder = TinyCaptionDecoder(cfg, args.vocab, args.width).eval()
    tokens = torch.randn(args.images, args.image_tokens, args.width)

    def run(use_cache: bool) -> list[list[int]]:
        return generate_ids(decoder, tokens, bos=1, eos=args.vocab, vocab_size=args.vocab, method=args.method,
                            num_beams=args.beams, use_cache=use_cache)

    times: dict[bool, float] = {True: float("inf"), False: float("inf")}
    out: dict[bool, list[list[int]]] = {}
    for _ in range(args.repeats):  # interleaved, so a change in machine load hits both alike
        for use_cache in (True, False):
            seconds, out[use_cache] = best_of(lambda use_cache=use_cache: run(use_cache))
            times[use_cache] = min(times[use_cache], seconds)
    assert out[True] == out[False], "cached and uncached captions differ"
    assert all(len(row) == args.length for row in out[True])
    print(f"{args.method} generation, {args.images} images × {args.length} tokens, decoder width {args.width}, "
          f"{2 * args.layers} layers, vocab {args.vocab}, {args.threads} thread(s), best of {args.repeats}")
    print(f"  uncached (prefix re-run every step): {times[False]:.3f} s")
    print(f"  key/value cache:                     {times[True]:.3f} s")
    print(f"  speed-up: {times[False] / times[True]:.1f}x   (captions identical: True)")


if __name__ == "__main__":
    main()
