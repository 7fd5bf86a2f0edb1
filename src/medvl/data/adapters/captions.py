"""Caption templates: turn labels of label-only datasets into texts (DLILP / UniCL style).

Templates are data files, ``medvl/resources/templates/<name>.yaml`` (or any YAML path)::

    name: radiology
    templates: ["A radiology image of {label}."]
    empty: "A radiology image of no finding."      # text for a record with no positive label
    class_phrases: {Effusion: "pleural effusion"}  # optional per-class wording

A record gets one caption per (positive class × template); the training dataset samples one
of them per step, as DLILP samples one label and fills its template.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator

from medvl.config.base import StrictModel

__all__ = ["CaptionTemplate", "available_templates", "captions_for", "load_template", "template_texts"]


class CaptionTemplate(StrictModel):
    """A caption template file."""

    name: str
    description: str = ""
    templates: list[str] = Field(min_length=1)
    empty: str = ""
    class_phrases: dict[str, str] = Field(default_factory=dict)

    @field_validator("templates")
    @classmethod
    def _has_placeholder(cls, values: list[str]) -> list[str]:
        for value in values:
            if "{label}" not in value:
                raise ValueError(f"template {value!r} lacks the {{label}} placeholder")
        return values

    def phrase(self, class_name: str) -> str:
        """The wording of ``class_name`` (override, else lower-case with spaces for ``_``)."""
        return self.class_phrases.get(class_name, class_name.replace("_", " ").lower())


def _template_dir() -> Path:
    return Path(str(resources.files("medvl") / "resources" / "templates"))


def available_templates() -> list[str]:
    """Names of the packaged templates."""
    return sorted(p.stem for p in _template_dir().glob("*.yaml"))


def load_template(name_or_path: str) -> CaptionTemplate:
    """Load a packaged template by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _template_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"caption template {name_or_path!r} not found; packaged templates: {available_templates()}"
        )
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a caption template must be a mapping")
    return CaptionTemplate.model_validate(data)


def captions_for(positive_classes: Sequence[str], template: CaptionTemplate) -> list[str]:
    """Captions for one record: every template for every positive class, or ``[empty]``."""
    texts = [t.format(label=template.phrase(c)) for c in positive_classes for t in template.templates]
    if not texts and template.empty:
        texts = [template.empty]
    return texts


def template_texts(labels: Sequence[Any], classes: Sequence[str],
                   template: CaptionTemplate, masks: Sequence[Sequence[bool]] | None = None) -> list[list[str]]:
    """Texts per record from labels: multilabel rows (0/1 per class, masked-out classes
    ignored) or class indices (multiclass; -1 = unannotated → no text)."""
    out: list[list[str]] = []
    for row, value in enumerate(labels):
        if not isinstance(value, Sequence) and not hasattr(value, "__len__"):
            index = int(value)
            out.append(captions_for([classes[index]], template) if index >= 0 else [])
            continue
        mask = masks[row] if masks is not None else [True] * len(classes)
        values = [float(v) for v in value]
        positives = [c for c, v, m in zip(classes, values, mask, strict=True) if m and v >= 0.5]
        out.append(captions_for(positives, template))
    return out
