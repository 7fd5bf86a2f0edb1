"""Figures of the synthetic dataset: example cases with their reports, and each finding by severity.

``save_gallery`` writes the figure shown in ``docs/synthetic.md`` (rerun with
``medvl data gallery --out docs/synthetic_examples.png --size 192``). Everything is seeded, so the
figure is reproducible. Report text is wrapped to the width of its own panel (monospace glyphs
are 0.6 em wide) and cut, with an ellipsis, to the lines that fit under it, so it never runs into
a neighbouring panel.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import numpy as np

from medvl.data.synthetic.findings import FINDINGS, Finding
from medvl.data.synthetic.generator import SyntheticCase, plan_records, render_case, sample_case

__all__ = ["REPORT_FONT_SIZE", "REPORT_MAX_LINES", "finding_examples", "pick_examples", "report_lines",
           "save_gallery"]

#: Report text under each example: font size (points) and the most lines that fit under a panel.
REPORT_FONT_SIZE = 6.5
REPORT_MAX_LINES = 8
_MONO_WIDTH_EM = 0.62  # DejaVu Sans Mono advance width is 0.602 em; a little margin


def report_lines(text: str, width_points: float, font_size: float = REPORT_FONT_SIZE,
                 max_lines: int = REPORT_MAX_LINES) -> list[str]:
    """``text`` wrapped to a panel ``width_points`` wide in monospace ``font_size``; at most
    ``max_lines`` lines, the last ending in "…" when text was cut."""
    chars = max(10, int(width_points / (_MONO_WIDTH_EM * font_size)))
    lines = textwrap.wrap(" ".join(text.split()), chars)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = textwrap.shorten(lines[-1] + " …", chars, placeholder=" …")
        if not lines[-1].endswith("…"):
            lines[-1] = lines[-1][: chars - 2] + " …"
    return lines

#: Laterality / zone used when illustrating each finding.
_ILLUSTRATION: dict[str, tuple[str, str]] = {
    "cardiomegaly": ("", ""),
    "pleural_effusion": ("right", ""),
    "pneumothorax": ("left", ""),
    "consolidation": ("right", "lower"),
    "edema": ("", ""),
    "atelectasis": ("left", ""),
    "nodule": ("right", "upper"),
    "mass": ("left", "upper"),
    "support_devices": ("", ""),
    "rib_fracture": ("right", "middle"),
}


def _display(name: str) -> str:
    """A finding's name as a reader writes it ("pleural effusion", not "pleural_effusion")."""
    return name.replace("_", " ")


def finding_examples(seed: int, patient: int, size: int) -> dict[str, list[np.ndarray]]:
    """For every finding: the same patient and acquisition rendered with no finding, then
    mild, moderate and severe (devices: once). Arrays are (size, size) uint8."""
    normal = render_case(sample_case(seed, patient, 0, findings=()), size)
    out: dict[str, list[np.ndarray]] = {}
    for name in FINDINGS:
        lat, zone = _ILLUSTRATION[name]
        severities = (0,) if name == "support_devices" else (1, 2, 3)
        images = [normal]
        for sev in severities:
            finding = Finding(name, sev, lat, zone, anchor=(0.5, 0.5))
            images.append(render_case(sample_case(seed, patient, 0, findings=(finding,)), size))
        out[name] = images
    return out


def pick_examples(seed: int, count: int) -> list[SyntheticCase]:
    """``count`` first visits of distinct patients of a dataset with this seed: a quarter normal, the rest abnormal."""
    cases = [sample_case(seed, p, v) for p, v in plan_records(8 * count, seed) if v == 0]  # one per patient
    normal = [c for c in cases if not c.findings]
    abnormal = [c for c in cases if c.findings]
    chosen = normal[: max(1, count // 4)]
    chosen += abnormal[: count - len(chosen)]
    return chosen[:count]


def save_gallery(path: str | os.PathLike[str], seed: int = 0, size: int = 256, n_examples: int = 8) -> Path:
    """Write the two-part gallery PNG (examples with reports; findings by severity) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medvl.utils.io import atomic_write_bytes

    examples = pick_examples(seed, n_examples)
    matrix = finding_examples(seed, patient=1, size=size)
    n_cols = 4
    n_rows_ex = -(-n_examples // n_cols)
    fig = plt.figure(figsize=(16, 5.2 * n_rows_ex + 2.05 * ((len(FINDINGS) + 1) // 2)))
    grid = fig.add_gridspec(n_rows_ex + (len(FINDINGS) + 1) // 2, 1,
                            height_ratios=[5.2] * n_rows_ex + [2.05] * ((len(FINDINGS) + 1) // 2),
                            top=0.96, bottom=0.01, hspace=0.45)
    for i, case in enumerate(examples):
        row, col = divmod(i, n_cols)
        sub = grid[row].subgridspec(1, n_cols)
        ax = fig.add_subplot(sub[col])
        ax.imshow(render_case(case, size), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        truth = ", ".join(_display(f.name) + (f" ({('mild', 'moderate', 'severe')[f.severity - 1]})" if f.severity else "")
                          for f in case.findings) or "no finding"
        ax.set_title(f"{case.record_id} · grade {case.grade}\ntruth: {textwrap.shorten(truth, 60)}", fontsize=8)
        ax.apply_aspect()  # the square image shrinks the panel inside its grid cell: wrap to the panel
        width_points = ax.get_position().width * fig.get_figwidth() * 72
        ax.text(0.0, -0.02, "\n".join(report_lines(case.report.text, width_points)),
                transform=ax.transAxes, fontsize=REPORT_FONT_SIZE, va="top", family="monospace")
    for j, name in enumerate(FINDINGS):
        row, col = divmod(j, 2)
        sub = grid[n_rows_ex + row].subgridspec(1, 8)
        images = matrix[name]
        labels = ["none"] + (["present"] if len(images) == 2 else ["mild", "moderate", "severe"])
        for k, (image, label) in enumerate(zip(images, labels, strict=True)):
            ax = fig.add_subplot(sub[4 * col + k])
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_display(name)}: {label}" if k else _display(name), fontsize=8)
    fig.suptitle(f"medvl synthetic chest radiographs (seed {seed}, {size} px): examples with their reports; "
                 "below, each finding on one patient by severity", fontsize=11, y=0.985)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    target = Path(path)
    atomic_write_bytes(target, buffer.getvalue())
    return target
