"""The Balancing Act's prostate study on synthetic biopsies: the configs next to the data.

``medvl slides synth --out DIR`` calls :func:`write_prostate_configs`, which writes
``DIR/run.yaml`` and ``DIR/experiment.yaml`` from the templates in ``medvl/resources/prostate``
(the manifest ``DIR/manifest.parquet`` that ``medvl data import slides`` will write, and the local
all-MiniLM-L6-v2 directory as the frozen report encoder). Then::

    medvl slides tile DIR/slides --out DIR/tiles --mpp 1.0 --patch-size 32 --region-size 128
    medvl slides embed DIR/tiles --model DIR/patch_encoder --out DIR/features
    medvl data import slides --root DIR --out DIR/manifest.parquet --set group_field=patient_id
    medvl sweep DIR/experiment.yaml --out runs/prostate
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from medvl.experiments.quickstart import quickstart_text_encoder
from medvl.utils.io import atomic_write_text

__all__ = ["write_prostate_configs"]


def write_prostate_configs(data_dir: str | os.PathLike[str]) -> Path:
    """Write the study's ``run.yaml`` and ``experiment.yaml`` into ``data_dir``; returns the experiment file."""
    root = Path(data_dir)
    manifest = (root / "manifest.parquet").resolve()
    template = resources.files("medvl.resources").joinpath("prostate", "run.yaml").read_text(encoding="utf-8")
    atomic_write_text(root / "run.yaml", template.format(manifest=manifest, text_encoder=quickstart_text_encoder()))
    experiment = root / "experiment.yaml"
    text = resources.files("medvl.resources").joinpath("prostate", "experiment.yaml").read_text(encoding="utf-8")
    atomic_write_text(experiment, text)
    return experiment
