"""``medvl align``: alignment diagnostics of saved embeddings, and alignment studies.

* ``medvl align EMBEDDINGS.. [--metrics all] [--topq 0.1] [--out DIR]`` — the default command
  (also reachable as ``medvl align metrics ...``): every metric for each EmbeddingSet directory
  (or ``.npz`` file holding paired ``image`` and ``text`` arrays), printed and saved as JSON,
  CSV and Markdown.
* ``medvl align study CONFIG [--out DIR] [--set key=value]`` — models × datasets: metrics,
  retrieval, correlations, domain tests, tables and plots (see docs/alignment.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["register"]

_SUBCOMMANDS_HELP = ("--help", "-h")


class _AlignGroup(TyperGroup):
    """A group whose default command is ``metrics``: ``medvl align X.emb`` = ``medvl align metrics X.emb``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in _SUBCOMMANDS_HELP:
            args = ["metrics", *args]
        return super().parse_args(ctx, args)


def _load_paired(path: Path, caption: str, normalize: bool, on_missing: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(image, text, EmbeddingSet, info) from an EmbeddingSet directory or an ``.npz`` of paired arrays
    (the same inputs as ``medvl evaluate --embeddings`` and ``align study`` entries)."""
    from medvl.evaluation.alignment.pairs import paired_embeddings
    from medvl.evaluation.embeddings import EmbeddingSetError, load_embeddings

    try:
        emb = load_embeddings(path)
    except EmbeddingSetError as exc:
        raise typer.BadParameter(str(exc)) from None
    if emb.num_texts == 0:
        raise typer.BadParameter(f"{path}: no text embeddings (an .npz needs arrays 'image' and 'text')")
    pairs = paired_embeddings(emb, caption=caption, normalize=normalize, on_missing=on_missing)
    info = {"source": str(path), "kind": "npz" if path.suffix == ".npz" else "EmbeddingSet", "caption": caption,
            "normalized": normalize, "n_images_without_caption": pairs.n_skipped, "meta": emb.meta}
    return pairs.image, pairs.text, emb, info


def _print_table(console: Any, title: str, values: dict[str, float], skipped: dict[str, str]) -> None:
    from rich.table import Table

    from medvl.evaluation.alignment.registry import HIGHER_IS_BETTER

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("better")
    for name, value in values.items():
        direction = {True: "higher", False: "lower", None: ""}[HIGHER_IS_BETTER.get(name)]
        shown = f"{value:.6f}" if isinstance(value, float) and math.isfinite(value) else str(value)
        table.add_row(name, shown, direction)
    for name, reason in skipped.items():
        table.add_row(name, "skipped", reason)
    console.print(table)


def _unique_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.stem if p.suffix == ".npz" else p.name
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.append(name)
    return names


def metrics_command(
    embeddings: list[Path] = typer.Argument(..., help="EmbeddingSet directories or .npz files (arrays 'image', 'text')."),
    metrics: str = typer.Option("all", "--metrics", help="Comma list of metric names or a preset: all, fast, paper."),
    topq: float = typer.Option(0.1, "--topq", help="SAS: fraction of the anchor spectrum kept."),
    knn_k: int = typer.Option(10, "--knn-k", help="Mutual k-NN: k."),
    svcca_dims: int = typer.Option(10, "--svcca-dims", help="SVCCA: SVD dimensions kept."),
    mmd_sigma: float | None = typer.Option(None, "--mmd-sigma", help="MMD² RBF σ (default: median heuristic)."),
    memory_budget_gb: float = typer.Option(1.0, "--memory-budget-gb", help="Memory for n×n blocks, GiB."),
    caption: str = typer.Option("first", "--caption", help="Text row per image: first | mean (of its captions)."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="L2-normalise rows first."),
    on_missing_caption: str = typer.Option("error", "--on-missing-caption", help="error | skip (counted)."),
    retrieval: bool = typer.Option(True, "--retrieval/--no-retrieval", help="Also R@1/5/10 and rSum (EmbeddingSets)."),
    sweep: bool = typer.Option(False, "--sweep", help="Also the SAS topq sweep 0.1..1.0."),
    per_record: bool = typer.Option(False, "--per-record", help="Also write per-record SAS (medvl extension) CSV."),
    out: Path = typer.Option(Path("runs/align"), "--out", help="Output directory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty output directory."),
    seed: int = typer.Option(0, "--seed", help="Seed of subsampled median bandwidths."),
) -> None:
    """Compute alignment metrics for each embedding set; print a table and save JSON/CSV/Markdown."""
    from rich.console import Console

    from medvl import __version__
    from medvl.config.alignment import AlignmentMetricsConfig
    from medvl.evaluation.alignment.registry import compute_alignment_metrics, resolve_metric_names
    from medvl.evaluation.alignment.sas import sas_per_record, sas_topq_sweep
    from medvl.evaluation.alignment.study import metric_options, retrieval_targets
    from medvl.evaluation.alignment.tables import markdown_table, write_csv
    from medvl.utils.io import atomic_write_json, atomic_write_text
    from medvl.utils.rundir import prepare_run_dir

    try:
        cfg = AlignmentMetricsConfig(
            metrics=[metrics], topq=topq, knn_k=knn_k, svcca_dims=svcca_dims, mmd_sigma=mmd_sigma,
            memory_budget_gb=memory_budget_gb, caption=caption, normalize=normalize,  # type: ignore[arg-type]
            on_missing_caption=on_missing_caption, seed=seed,  # type: ignore[arg-type]
        )
        resolve_metric_names(metrics)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console()
    out_dir = prepare_run_dir(out, overwrite=overwrite, resumable=False)
    summary: list[dict[str, Any]] = []
    for path, name in zip(embeddings, _unique_names(embeddings), strict=True):
        try:
            image, text, emb, info = _load_paired(path, cfg.caption, cfg.normalize, cfg.on_missing_caption)
            report = compute_alignment_metrics(image, text, cfg.metrics, metric_options(cfg))
            values: dict[str, Any] = dict(report.values)
            if retrieval:
                values.update(retrieval_targets(emb))
            sweep_rows = sas_topq_sweep(image, text, memory_budget=metric_options(cfg).memory_budget) if sweep else []
        except ValueError as exc:
            console.print(f"[red]error[/red] {path}: {exc}")
            raise typer.Exit(code=1) from None
        _print_table(console, f"{name}: n = {report.n}, d = {report.dims[0]}/{report.dims[1]}", values, report.skipped)
        atomic_write_json(out_dir / f"{name}.json", {
            "medvl_version": __version__, "input": info, "options": report.options.to_dict(),
            "metrics_requested": metrics, "n": report.n, "dims": list(report.dims), "values": values,
            "skipped": report.skipped, "seconds": report.seconds, "sweep": sweep_rows,
        })
        atomic_write_text(out_dir / f"{name}.md", f"# Alignment of {path}\n\n"
                          + markdown_table(["metric", "value"], [[k, v] for k, v in values.items()], 6))
        if per_record and report.dims[0] == report.dims[1]:
            from medvl.evaluation.alignment.pairs import paired_embeddings

            ids = paired_embeddings(emb, caption=cfg.caption, normalize=cfg.normalize,
                                    on_missing=cfg.on_missing_caption).image_ids
            budget = metric_options(cfg).memory_budget
            it = sas_per_record(image, text, topq=cfg.topq, memory_budget=budget)
            ti = sas_per_record(text, image, topq=cfg.topq, memory_budget=budget)
            write_csv(out_dir / f"{name}.per_record_sas.csv",
                      [{"image_id": i, "sas_it": float(a), "sas_ti": float(b)} for i, a, b in zip(ids, it, ti, strict=True)])
        summary.append({"name": name, "source": str(path), "n": report.n, **values})
    write_csv(out_dir / "summary.csv", summary)
    console.print(f"results written to {out_dir}")


def study_command(
    config: Path = typer.Argument(..., help="Study YAML (see docs/alignment.md)."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: output_dir of the config)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty output directory."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set metrics.topq=0.2"),
) -> None:
    """Metrics + retrieval per model × dataset, correlations with retrieval, domain tests, tables, plots."""
    from rich.console import Console

    from medvl.config import load_config
    from medvl.config.alignment import AlignmentStudyConfig
    from medvl.evaluation.alignment.study import run_study

    console = Console()
    cfg = load_config(config, AlignmentStudyConfig, overrides)
    out_dir = run_study(cfg, config_dir=config.resolve().parent, out_dir=out, overwrite=overwrite,
                        progress=console.print)
    console.print(f"study written to {out_dir} (correlations.md, domain_tests.md, entries.md, plots/)")


def register(app: typer.Typer) -> None:
    """Add the ``align`` group (default command ``metrics``, plus ``study``) to ``app``."""
    align_app = typer.Typer(
        cls=_AlignGroup,
        help="Alignment diagnostics: SAS, CKA, SVCCA, CORAL, MMD, modality gap, mutual k-NN, … and studies.",
        no_args_is_help=True,
    )
    align_app.command("metrics")(metrics_command)
    align_app.command("study")(study_command)
    app.add_typer(align_app, name="align")
