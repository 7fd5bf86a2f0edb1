"""The synthetic gallery figure: report text stays inside its own column, readable titles,
and the command writes where it is told (not into docs/ by default)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medvl.data.synthetic.gallery import report_lines, save_gallery


def _overlap(a: object, b: object) -> bool:
    return bool(a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5)  # type: ignore[attr-defined]


@pytest.mark.slow  # renders 8 examples + 34 finding panels
def test_report_text_does_not_run_into_neighbouring_panels(tmp_path: Path, saved_figures: list) -> None:
    save_gallery(tmp_path / "g.png", seed=0, size=64)
    fig = saved_figures[-1]
    assert fig.png_pixels_std > 5
    assert not fig.unreadable(), fig.unreadable()  # "pleural effusion: mild", not "pleural_effusion"
    texts, panels = fig.free_text_boxes, fig.axes_boxes
    assert len(texts) == 8
    for (i, a), (j, b) in itertools.combinations(enumerate(texts), 2):
        assert not _overlap(a, b), f"report {i} runs into report {j}"
    for i, box in enumerate(texts):
        assert not any(_overlap(box, panel) for panel in panels), f"report {i} runs into a panel"
        own = min((p for p in panels if p.y1 > box.y1), key=lambda p: abs(p.x0 - box.x0) + abs(p.y0 - box.y1))
        assert box.x1 <= own.x1 + 2, f"report {i} is wider than its image ({box.x1:.0f} > {own.x1:.0f} px)"


def test_report_lines_fit_the_width_and_mark_a_cut() -> None:
    text = "FINDINGS: " + " ".join(["There is a moderate right pleural effusion."] * 12)
    lines = report_lines(text, width_points=200, font_size=6.5, max_lines=5)
    chars = int(200 / (0.62 * 6.5))
    assert len(lines) == 5 and all(len(line) <= chars for line in lines)
    assert lines[-1].endswith("…")
    assert report_lines("Short report.", 200) == ["Short report."]


def test_gallery_default_output_is_not_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medvl.cli.main import build_app

    written: list[Path] = []
    monkeypatch.setattr("medvl.data.synthetic.gallery.save_gallery",
                        lambda out, seed, size: written.append(Path(out)) or Path(out))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(build_app(), ["data", "gallery"])
    assert result.exit_code == 0, result.output
    assert written == [Path("synthetic_examples.png")]  # the current directory, never docs/
