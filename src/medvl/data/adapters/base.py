"""Shared pieces of the dataset adapters: options, layout checks, ids, splits, record assembly.

Every adapter turns a dataset's own files into an :class:`ImportedDataset` (records in the
manifest schema of ``docs/DESIGN.md`` + task specs + the root image paths are relative to).
The helpers here carry the lessons of the reference code (``shared/reference``):

* ids are normalised to canonical strings (:func:`normalise_id`), so an ``int`` patient id in
  one CSV and the same id as a string (or zero-padded, or ``p``-prefixed) in a path compare
  equal and can never leak a test patient into training;
* random splits are a pure function of ``(seed, group)`` (:func:`hash_split`), independent of
  row order, directory listing order or which other records exist;
* records are sorted by id and checked for unique ids and for groups that cross splits
  before anything is written (:func:`finalise_records`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from medvl.config.base import StrictModel
from medvl.data.manifest import SPLITS as MANIFEST_SPLITS
from medvl.data.manifest import TaskSpec
from medvl.utils.errors import UserInputError

__all__ = [
    "SPLITS",
    "AdapterSpec",
    "CommonOptions",
    "DatasetFormatError",
    "DatasetLayoutError",
    "ImportedDataset",
    "SkipCounter",
    "apply_uncertainty_policy",
    "assign_missing_splits",
    "carve_val_split",
    "check_image_files",
    "encode_png",
    "finalise_records",
    "find_first",
    "hash_split",
    "hash_unit",
    "image_extension",
    "normalise_id",
    "read_table",
    "require_columns",
    "require_extract_dir",
    "require_paths",
    "require_records",
    "write_image_file",
]

#: The split names of the manifest contract (without the empty "unassigned" split).
SPLITS: tuple[str, ...] = tuple(s for s in MANIFEST_SPLITS if s)

UncertainPolicy = Literal["zeros", "ones", "ignore"]


class DatasetLayoutError(UserInputError, FileNotFoundError):
    """A dataset directory lacks files an adapter needs; the message lists them and the layout."""


class DatasetFormatError(UserInputError, ValueError):
    """A dataset file exists but its content does not have the expected form."""


class CommonOptions(StrictModel):
    """Options every adapter accepts (``--set key=value`` on the command line)."""

    split_seed: int = 0
    """Seed of the group-hash split used where a dataset has no official split (or no val split)."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Fraction of groups sent to ``val`` where the dataset has no official validation split."""
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Fraction of groups sent to ``test`` where the dataset has no official test split."""
    on_bad_sample: Literal["error", "skip"] = "error"
    """A record whose file is missing or whose labels cannot be parsed: raise (naming it) or skip and count."""
    check_files: bool = True
    """Check that every referenced image/feature file exists (one ``stat`` per record)."""
    caption_template: str | None = None
    """Name of a caption template (``resources/templates/<name>.yaml``) that turns labels into texts."""

    @field_validator("test_fraction")
    @classmethod
    def _fractions_leave_train(cls, value: float, info: Any) -> float:
        val = info.data.get("val_fraction", 0.0)
        if val + value >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val} + {value}")
        return value


@dataclass
class SkipCounter:
    """Counts skipped records per reason (reported in the manifest info, never a silent drop)."""

    policy: Literal["error", "skip"] = "error"
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    """Records removed on purpose by an option (e.g. a frontal-view filter), per reason."""

    def filter(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records removed by an explicit option (not an error)."""
        if n:
            self.filtered[reason] = self.filtered.get(reason, 0) + int(n)

    def bad(self, reason: str, record: str, detail: str = "") -> None:
        """Register a bad record: raise under ``error``, count it under ``skip``."""
        message = f"{record}: {reason}" + (f" ({detail})" if detail else "")
        if self.policy == "error":
            raise DatasetFormatError(message + "; set on_bad_sample=skip to skip and count such records")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(record)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()},
                "filtered": dict(self.filtered)}


@dataclass
class ImportedDataset:
    """What an adapter returns: records (manifest columns), task specs, image root and import info."""

    records: pd.DataFrame
    tasks: dict[str, TaskSpec]
    root: Path
    info: dict[str, Any] = field(default_factory=dict)
    """Adapter name, options, split sizes, skip counts and notes (stored with the manifest)."""

    def to_manifest(self) -> Any:
        """The records as a :class:`medvl.data.manifest.Manifest`."""
        from medvl.data.manifest import Manifest

        return Manifest(self.records, tasks=dict(self.tasks), root=self.root)


@dataclass(frozen=True)
class AdapterSpec:
    """A registry entry: the adapter's name, options schema, loader and documented layout."""

    name: str
    summary: str
    options: type[CommonOptions]
    load: Callable[[Path, Any], ImportedDataset]
    layout: str
    """The expected directory layout (shown in errors and in ``docs/datasets.md``)."""
    command: str
    """The exact import command for this dataset."""
    extracts_images: bool = False
    """Whether the adapter writes image files (its options then have ``extract_dir``)."""


# --------------------------------------------------------------------------------------- ids

_INT_FLOAT = re.compile(r"^[+-]?\d+\.0*$")


def normalise_id(value: Any, strip_prefix: str = "") -> str:
    """Canonical string form of an id read from a CSV, a path or JSON.

    ``12``, ``12.0``, ``"12"``, ``"0012"``, ``" 12 "`` and ``np.int64(12)`` all become ``"12"``;
    with ``strip_prefix="p"`` so does ``"p12"`` (MIMIC's directory names). Non-numeric strings
    are only stripped of surrounding whitespace. Missing values raise, because a missing patient
    id cannot be grouped safely.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        raise DatasetFormatError("missing id value")
    if isinstance(value, (bool, np.bool_)):
        raise DatasetFormatError(f"boolean {value!r} is not an id")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer():
            return str(int(value))
        raise DatasetFormatError(f"non-integer numeric id {value!r}")
    text = str(value).strip()
    if strip_prefix and text.startswith(strip_prefix) and text[len(strip_prefix):].isdigit():
        text = text[len(strip_prefix):]
    if text.isdigit():
        return str(int(text))
    if _INT_FLOAT.match(text):
        return str(int(float(text)))
    if not text:
        raise DatasetFormatError("empty id value")
    return text


def normalise_ids(values: Iterable[Any], what: str, strip_prefix: str = "") -> list[str]:
    """:func:`normalise_id` over a column, naming the row position of a bad value."""
    out: list[str] = []
    for position, value in enumerate(values):
        try:
            out.append(normalise_id(value, strip_prefix))
        except DatasetFormatError as exc:
            raise DatasetFormatError(f"{what}, row {position}: {exc}") from None
    return out


# ------------------------------------------------------------------------------------ splits


def hash_unit(key: str, seed: int) -> float:
    """A uniform number in [0, 1) that depends only on ``(seed, key)`` (sha256)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(groups: Sequence[str] | pd.Series, seed: int, fractions: Mapping[str, float]) -> list[str]:
    """Assign each group to a split by hashing ``(seed, group)``; the rest goes to ``train``.

    ``fractions`` maps split names (e.g. ``{"val": 0.1, "test": 0.1}``) to the expected share of
    groups. The result for a group never depends on row order or on the other groups, so
    adding or removing records (or listing a directory in another order) leaves it unchanged.
    """
    total = sum(fractions.values())
    if total >= 1.0:
        raise ValueError(f"split fractions must sum to < 1, got {dict(fractions)}")
    bounds: list[tuple[float, str]] = []
    acc = 0.0
    for name, fraction in fractions.items():
        if fraction > 0:
            acc += fraction
            bounds.append((acc, name))
    cache: dict[str, str] = {}
    out: list[str] = []
    for group in groups:
        split = cache.get(group)
        if split is None:
            u = hash_unit(group, seed)
            split = next((name for bound, name in bounds if u < bound), "train")
            cache[group] = split
        out.append(split)
    return out


# ------------------------------------------------------------------------------------ files


def require_paths(root: Path, dataset: str, layout: str, required: Sequence[str] = (),
                  any_of: Sequence[Sequence[str]] = ()) -> None:
    """Raise :class:`DatasetLayoutError` naming every missing file (relative to ``root``).

    ``required`` must all exist; from each list in ``any_of`` at least one must exist.
    """
    if not root.is_dir():
        raise DatasetLayoutError(f"{dataset}: root {root} is not a directory.\nExpected layout:\n{layout}")
    missing = [name for name in required if not (root / name).exists()]
    for alternatives in any_of:
        if not any((root / name).exists() for name in alternatives):
            missing.append(" or ".join(alternatives))
    if missing:
        lines = "\n".join(f"  - {name}" for name in missing)
        raise DatasetLayoutError(f"{dataset}: missing under {root}:\n{lines}\nExpected layout:\n{layout}")


def find_first(root: Path, candidates: Sequence[str]) -> Path | None:
    """The first of ``candidates`` (relative to ``root``) that exists, else None."""
    for name in candidates:
        if (root / name).exists():
            return root / name
    return None


def read_table(path: Path, id_columns: Sequence[str] = (), **kwargs: Any) -> pd.DataFrame:
    """Read a CSV (also ``.csv.gz``/``.zip``) or TSV, keeping ``id_columns`` as strings.

    Id columns are read as text so that zero padding survives until :func:`normalise_id`
    canonicalises them; everything else is parsed by pandas.
    """
    dtype = {name: "string" for name in id_columns}
    sep = "\t" if path.name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
    try:
        frame = pd.read_csv(path, dtype=dtype, sep=kwargs.pop("sep", sep), **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise DatasetFormatError(f"{path}: cannot be parsed as a table ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: Path | str) -> None:
    """Raise :class:`DatasetFormatError` naming the columns ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def check_image_files(records: pd.DataFrame, root: Path, skips: SkipCounter, column: str = "image") -> pd.DataFrame:
    """Keep records whose file exists under ``root``; bad ones raise or are counted (``skips``)."""
    exists = np.fromiter(((root / p).is_file() for p in records[column]), dtype=bool, count=len(records))
    if exists.all():
        return records
    missing = records.loc[~exists]
    if skips.policy == "error":
        names = ", ".join(f"{i} -> {p}" for i, p in zip(missing["id"][:10], missing[column][:10], strict=False))
        raise DatasetLayoutError(
            f"{len(missing)} of {len(records)} referenced files are missing under {root} (first: {names}); "
            "set on_bad_sample=skip to skip and count them"
        )
    for record_id, path in zip(missing["id"], missing[column], strict=True):
        skips.bad("missing file", str(record_id), str(path))
    return records.loc[exists].reset_index(drop=True)


# ------------------------------------------------------------------------------------ labels


def apply_uncertainty_policy(values: np.ndarray, policy: UncertainPolicy | Sequence[UncertainPolicy],
                             blank: Literal["zeros", "ignore"] = "zeros") -> tuple[np.ndarray, np.ndarray]:
    """Map CheXpert-style label codes to (targets, mask).

    ``values``: float array (N, C) with 1 = positive, 0 = negative, -1 = uncertain, NaN = not
    mentioned. ``policy`` (one for all classes, or one per class): uncertain → 0 (``zeros``),
    → 1 (``ones``), or masked out (``ignore``: target 0, mask False). ``blank`` does the same
    for NaN (``zeros``, the usual convention, or ``ignore``). Returns float32 targets in {0, 1}
    and a bool mask, both (N, C).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"label values must be 2-D (N, C), got shape {values.shape}")
    n_classes = values.shape[1]
    policies = [policy] * n_classes if isinstance(policy, str) else list(policy)
    if len(policies) != n_classes:
        raise ValueError(f"got {len(policies)} uncertainty policies for {n_classes} classes")
    known = np.isnan(values) | np.isin(values, (-1.0, 0.0, 1.0))
    if not known.all():
        row, col = np.argwhere(~known)[0]
        raise DatasetFormatError(f"label value {values[row, col]!r} at row {row}, class {col} is not one of 1, 0, -1, blank")
    targets = np.where(values == 1.0, 1.0, 0.0)
    mask = np.ones_like(values, dtype=bool)
    for c, pol in enumerate(policies):
        uncertain = values[:, c] == -1.0
        if pol == "ones":
            targets[uncertain, c] = 1.0
        elif pol == "ignore":
            mask[uncertain, c] = False
        elif pol != "zeros":
            raise ValueError(f"unknown uncertainty policy {pol!r}; use zeros, ones or ignore")
    if blank == "ignore":
        mask[np.isnan(values)] = False
    return targets.astype(np.float32), mask


def rows_as_lists(matrix: np.ndarray, dtype: type = float) -> list[list[Any]]:
    """Rows of a 2-D array as Python lists (the manifest's list-valued label cells)."""
    return [[dtype(v) for v in row] for row in np.asarray(matrix).tolist()]


# ----------------------------------------------------------------------------------- records

_BASE_COLUMNS = ("id", "image", "image_type", "texts", "group", "split", "fold", "source")


def finalise_records(records: pd.DataFrame, tasks: Mapping[str, TaskSpec], source: str,
                     check_groups: bool = True) -> pd.DataFrame:
    """Complete, check and sort adapter output into the manifest column layout.

    Fills ``image_type`` (empty), ``texts`` ([]), ``fold`` (-1), ``split`` ("") and ``source``
    when absent; requires unique string ids, string groups and splits in :data:`SPLITS` or "";
    checks that each task has a ``labels.<task>`` column and that no group appears in two
    splits; sorts by ``id`` so the output never depends on input order.
    """
    frame = records.copy()
    defaults: dict[str, Any] = {"image_type": "", "split": "", "fold": -1, "source": source}
    for name, value in defaults.items():
        if name not in frame.columns:
            frame[name] = value
    if "texts" not in frame.columns:
        frame["texts"] = [[] for _ in range(len(frame))]
    for name in ("id", "image", "group"):
        if name not in frame.columns:
            raise DatasetFormatError(f"{source}: adapter output lacks the {name!r} column")
    for name in ("id", "image", "image_type", "group", "split", "source"):
        frame[name] = frame[name].astype(str)
    frame["fold"] = frame["fold"].astype("int64")
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        raise DatasetFormatError(f"{source}: duplicate record ids {sorted(set(duplicated))[:10]}")
    bad_split = sorted(set(frame["split"]) - {*SPLITS, ""})
    if bad_split:
        raise DatasetFormatError(f"{source}: unknown split name(s) {bad_split}; use {SPLITS} or ''")
    for task in tasks:
        if f"labels.{task}" not in frame.columns:
            raise DatasetFormatError(f"{source}: task {task!r} has no labels.{task} column")
    if check_groups:
        assert_no_group_crosses_splits(frame, source)
    ordered = [c for c in _BASE_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in ordered]
    return frame.sort_values("id", kind="stable").reset_index(drop=True)[ordered + rest]


def require_records(frame: pd.DataFrame, skips: SkipCounter, dataset: str) -> None:
    """Refuse an import that kept no record: skipping *everything* is an error, never a success.

    The message gives the skip and filter counts with example record ids, so a systematic
    cause (a file-naming scheme the adapter does not know, a wrong option) is visible at once.
    """
    if len(frame):
        return
    details = []
    if skips.counts:
        details.append(f"skipped {skips.counts} (e.g. {dict(skips.examples)})")
    if skips.filtered:
        details.append(f"filtered by options {skips.filtered}")
    reason = "; ".join(details) if details else "the dataset files list no records"
    raise DatasetFormatError(f"{dataset}: no record was imported: {reason}. Nothing is written; "
                             "check the layout and options (medvl data datasets NAME shows them)")


def assert_no_group_crosses_splits(frame: pd.DataFrame, source: str) -> None:
    """Raise naming the groups that occur in more than one non-empty split."""
    assigned = frame.loc[frame["split"] != "", ["group", "split"]]
    per_group = assigned.groupby("group")["split"].nunique()
    crossing = per_group[per_group > 1]
    if len(crossing):
        examples = {g: sorted(set(assigned.loc[assigned["group"] == g, "split"])) for g in crossing.index[:5]}
        raise DatasetFormatError(f"{source}: {len(crossing)} group(s) occur in more than one split, e.g. {examples}")


def split_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Records and groups per split (logged in the import info)."""
    out: dict[str, dict[str, int]] = {}
    for split, part in frame.groupby("split", sort=True):
        out[str(split) or "(none)"] = {"records": len(part), "groups": int(part["group"].nunique())}
    return out


def make_info(name: str, options: CommonOptions, frame: pd.DataFrame, skips: SkipCounter,
              notes: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """The ``info`` dict of an :class:`ImportedDataset`."""
    return {
        "adapter": name,
        "options": options.model_dump(mode="json"),
        "records": len(frame),
        "splits": split_counts(frame),
        "skipped": skips.as_dict(),
        "notes": list(notes),
        **extra,
    }


# ----------------------------------------------------------------------- extracted images

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes from their magic number ('' if unknown)."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ""


def write_image_file(directory: Path, stem: str, data: bytes, overwrite: bool = False) -> str:
    """Write encoded image bytes as ``directory/stem.<ext>``; returns the file name.

    The extension comes from the bytes' magic number; unknown bytes raise. An existing file
    with the same size is kept (re-running an import is cheap) unless ``overwrite``.
    """
    from medvl.utils.io import atomic_write_bytes

    ext = image_extension(data)
    if not ext:
        raise DatasetFormatError(f"{stem}: embedded bytes are not a known image format (first bytes {data[:8]!r})")
    target = directory / f"{stem}{ext}"
    if overwrite or not target.is_file() or target.stat().st_size != len(data):
        atomic_write_bytes(target, data)
    return target.name


def require_extract_dir(extract_dir: str | None, dataset: str) -> Path:
    """The directory an adapter writes images to (set by the CLI from ``--out`` by default)."""
    if not extract_dir:
        raise DatasetLayoutError(
            f"{dataset}: images are embedded in the dataset files and must be written out; "
            "set extract_dir=<directory> (the CLI defaults it to <out stem>_images next to --out)"
        )
    path = Path(extract_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def assign_missing_splits(frame: pd.DataFrame, options: CommonOptions) -> pd.DataFrame:
    """Give records with an empty split a group-hash split (val/test fractions of the options).

    A group that already has a split somewhere keeps it for all of its records.
    """
    missing = frame["split"] == ""
    if not missing.any():
        return frame
    out = frame.copy()
    known = out.loc[~missing].groupby("group")["split"].first().to_dict()
    fractions = {"val": options.val_fraction, "test": options.test_fraction}
    hashed = hash_split(out.loc[missing, "group"].tolist(), options.split_seed, fractions)
    out.loc[missing, "split"] = [known.get(g, s) for g, s in zip(out.loc[missing, "group"], hashed, strict=True)]
    return out


def carve_val_split(frame: pd.DataFrame, options: CommonOptions, from_split: str = "train") -> pd.DataFrame:
    """Move a ``val_fraction`` of ``from_split``'s groups to ``val`` (group hash), if no val exists."""
    if (frame["split"] == "val").any() or options.val_fraction == 0:
        return frame
    out = frame.copy()
    rows = out["split"] == from_split
    hashed = hash_split(out.loc[rows, "group"].tolist(), options.split_seed, {"val": options.val_fraction})
    out.loc[rows, "split"] = [from_split if s == "train" else s for s in hashed]
    return out


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image array (H, W), (H, W, 1) or (H, W, 3)."""
    import io

    from PIL import Image

    data = np.asarray(array)
    if data.dtype != np.uint8:
        raise DatasetFormatError(f"expected uint8 pixels, got {data.dtype}")
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] not in (3, 4)):
        raise DatasetFormatError(f"cannot encode an image of shape {data.shape}")
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    return buffer.getvalue()


def finish_import(
    frame: pd.DataFrame,
    tasks: Mapping[str, TaskSpec],
    root: Path,
    name: str,
    options: CommonOptions,
    skips: SkipCounter,
    notes: Sequence[str] = (),
    *,
    source: str | None = None,
    check_files: bool | None = None,
    **extra: Any,
) -> ImportedDataset:
    """The shared end of every adapter: file check, :func:`finalise_records`, info.

    ``check_files`` defaults to ``options.check_files``; adapters that write their own images
    (MedMNIST, PCam) or check files elsewhere pass ``False``. ``source`` defaults to ``name``.
    """
    if options.check_files if check_files is None else check_files:
        frame = check_image_files(frame, root, skips)
    require_records(frame, skips, name)
    frame = finalise_records(frame, tasks, source or name)
    return ImportedDataset(frame, dict(tasks), root, make_info(name, options, frame, skips, notes, **extra))
