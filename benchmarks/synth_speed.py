"""Generation speed of the synthetic chest-radiograph dataset (target: ≥ 300 images/s on one core at 128 px).

Measures, in one process and one run (each figure the best of ``--repeats`` rounds):
  * full   – sample case + write report + render + PNG encode + write file (what ``medvl data synth`` does)
  * stages – sampling/reports only, rendering only, PNG encoding only
  * blank  – baseline: PNG-encode and write a blank image (the I/O floor)
  * naive  – baseline: a per-pixel Python renderer of a much simpler chest (body, two lungs, heart)
and prints images/s (wall clock and CPU time; CPU time is the fair figure on a shared machine),
the ratio to the 300/s target and the ratios to the baselines.

    .venv/bin/python -m benchmarks.synth_speed            # default: 400 images at 128 px, best of 3
    .venv/bin/python -m benchmarks.synth_speed --n 3000 --size 256
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medvl.data.synthetic import encode_png, plan_records, render_case, sample_case
from medvl.data.synthetic.textures import noise_bank, texture_bank

TARGET = 300.0


_REPEATS = 3


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds) of ``_REPEATS`` calls: the minimum is the figure least
    disturbed by other processes on a shared machine (as ``timeit`` recommends)."""
    walls, cpus = [], []
    for _ in range(_REPEATS):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def _naive_chest(size: int) -> np.ndarray:
    """Per-pixel Python: body ellipse, two lung ellipses, heart ellipse (the loop we avoid)."""
    img = np.zeros((size, size), dtype=np.uint8)
    for r in range(size):
        y = 2.0 * r / (size - 1) - 1.0
        for c in range(size):
            x = 2.0 * c / (size - 1) - 1.0
            d = 0.5 if (x / 0.9) ** 2 + (y / 1.3) ** 2 < 1 else 0.0
            for cx in (-0.4, 0.4):
                if ((x - cx) / 0.3) ** 2 + ((y + 0.05) / 0.6) ** 2 < 1:
                    d -= 0.4
            if ((x - 0.1) / 0.3) ** 2 + ((y - 0.3) / 0.25) ** 2 < 1:
                d += 0.3
            img[r, c] = int(255 * (1 - math.exp(-2.2 * max(d, 0.0))) / (1 - math.exp(-2.2)))
    return img


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="images in the full-pipeline measurement")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naive-n", type=int, default=2, help="images for the per-pixel baseline")
    parser.add_argument("--repeats", type=int, default=3, help="repeat each measurement, keep the best")
    args = parser.parse_args(argv)
    global _REPEATS
    _REPEATS = max(1, args.repeats)
    n, size = args.n, args.size
    plan = plan_records(n, args.seed)
    texture_bank(min(size, 256))  # one-off per-process set-up, not per image
    noise_bank(size) if size <= 512 else None

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def full() -> None:
            for p, v in plan:
                case = sample_case(args.seed, p, v)
                (out / f"{case.record_id}.png").write_bytes(encode_png(render_case(case, size)))

        full_wall, full_cpu = _timed(full)

        cases = [sample_case(args.seed, p, v) for p, v in plan]
        images = [render_case(c, size) for c in cases]
        _sample_wall, sample_cpu = _timed(lambda: [sample_case(args.seed, p, v) for p, v in plan])
        _render_wall, render_cpu = _timed(lambda: [render_case(c, size) for c in cases])
        _png_wall, png_cpu = _timed(lambda: [encode_png(im) for im in images])

        blank = np.zeros((size, size), dtype=np.uint8)

        def write_blank() -> None:
            for i in range(n):
                (out / f"blank{i}.png").write_bytes(encode_png(blank))

        _blank_wall, blank_cpu = _timed(write_blank)

    _naive_wall, naive_cpu = _timed(lambda: [_naive_chest(size) for _ in range(args.naive_n)])

    def rate(count: int, seconds: float) -> float:
        return count / max(seconds, 1e-9)

    result = {
        "size": size,
        "n": n,
        "full_images_per_s_wall": rate(n, full_wall),
        "full_images_per_s_cpu": rate(n, full_cpu),
        "sample_and_report_per_s_cpu": rate(n, sample_cpu),
        "render_per_s_cpu": rate(n, render_cpu),
        "png_encode_per_s_cpu": rate(n, png_cpu),
        "blank_write_per_s_cpu": rate(n, blank_cpu),
        "naive_per_pixel_per_s_cpu": rate(args.naive_n, naive_cpu),
    }
    result["ratio_to_target_cpu"] = result["full_images_per_s_cpu"] / TARGET
    result["ratio_to_target_wall"] = result["full_images_per_s_wall"] / TARGET
    result["ratio_to_blank_write"] = result["full_images_per_s_cpu"] / result["blank_write_per_s_cpu"]
    result["speedup_vs_naive"] = result["full_images_per_s_cpu"] / result["naive_per_pixel_per_s_cpu"]

    print(f"synthetic CXR generation, {n} images at {size}px, one process")
    print(f"  full pipeline     {result['full_images_per_s_cpu']:8.1f} images/s (CPU time)   "
          f"{result['full_images_per_s_wall']:8.1f} images/s (wall)")
    print(f"    sample + report {result['sample_and_report_per_s_cpu']:8.1f} /s")
    print(f"    render          {result['render_per_s_cpu']:8.1f} /s")
    print(f"    PNG encode      {result['png_encode_per_s_cpu']:8.1f} /s")
    print(f"  baseline blank PNG write   {result['blank_write_per_s_cpu']:8.1f} /s  "
          f"-> full is {result['ratio_to_blank_write']:.2f}x of the I/O floor")
    print(f"  baseline naive per-pixel   {result['naive_per_pixel_per_s_cpu']:8.2f} /s  "
          f"-> vectorised is {result['speedup_vs_naive']:.0f}x faster")
    print(f"  target {TARGET:.0f}/s: ratio {result['ratio_to_target_cpu']:.2f} (CPU time), "
          f"{result['ratio_to_target_wall']:.2f} (wall)")
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    return result


if __name__ == "__main__":
    main()
