"""Dataset adapters: one module per public dataset, each turning the dataset's own files into a
manifest (records + task specs + root). ``ADAPTERS`` is the plain-dict registry.

Usage::

    from medvl.data.adapters import import_dataset
    imported = import_dataset("chexpert", "/data/chexpert", {"uncertain": "ones"})
    manifest = imported.to_manifest()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medvl.data.adapters import (
    bach,
    chexpert,
    coco,
    covid_qu,
    deepeyenet,
    flickr30k,
    ham10000,
    lc25000,
    medmnist,
    mimic_cxr,
    mimic_cxr_parquet,
    nct_crc_he,
    nih_cxr14,
    nih_lt,
    pad_ufes_20,
    padchest,
    path_vqa,
    pcam,
    pmc_oa,
    quilt,
    roco,
    rsna_pneumonia,
    sicapv2,
    siim_acr,
    slake,
    slides,
    vindr,
    vindr_mammo,
    vqa_rad,
)
from medvl.data.adapters.base import (
    AdapterSpec,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    normalise_id,
)

__all__ = [
    "ADAPTERS",
    "AdapterSpec",
    "DatasetFormatError",
    "DatasetLayoutError",
    "ImportedDataset",
    "get_adapter",
    "import_dataset",
    "normalise_id",
]

#: name → adapter (timm-style plain registry).
ADAPTERS: dict[str, AdapterSpec] = {
    spec.name: spec
    for spec in (
        coco.SPEC, flickr30k.SPEC, mimic_cxr.SPEC, roco.SPEC, pmc_oa.SPEC, quilt.SPEC, chexpert.SPEC,
        padchest.SPEC, nih_cxr14.SPEC, rsna_pneumonia.SPEC, siim_acr.SPEC, vindr.SPEC, covid_qu.SPEC,
        medmnist.SPEC, pcam.SPEC, slides.SPEC, mimic_cxr_parquet.SPEC, deepeyenet.SPEC, vindr_mammo.SPEC,
        pad_ufes_20.SPEC, ham10000.SPEC, nct_crc_he.SPEC, lc25000.SPEC, bach.SPEC, sicapv2.SPEC,
        vqa_rad.SPEC, slake.SPEC, path_vqa.SPEC, nih_lt.SPEC,
    )
}


def get_adapter(name: str) -> AdapterSpec:
    """The registered adapter ``name`` (error listing the known ones)."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; available: {sorted(ADAPTERS)}") from None


def import_dataset(name: str, root: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> ImportedDataset:
    """Run adapter ``name`` on the dataset at ``root`` with ``options`` (validated, unknown keys rejected)."""
    spec = get_adapter(name)
    from medvl.config import ConfigError, config_from_dict

    try:
        parsed = config_from_dict(dict(options or {}), spec.options, source=f"{name} options")
    except ConfigError:
        raise
    return spec.load(Path(root), parsed)
