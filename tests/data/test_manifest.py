"""Manifest: task specs, round-trips in Parquet/CSV/JSONL, label arrays, validation messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvl.data.manifest import (
    Manifest,
    ManifestError,
    TaskSpec,
    concat_manifests,
    infer_image_type,
    read_manifest,
    sidecar_path,
    validate_manifest,
    write_manifest,
)

TASKS = [
    TaskSpec("findings", "multilabel", ("effusion", "nodule", "fracture"), novel_classes=("fracture",)),
    TaskSpec("grade", "ordinal", ("none", "mild", "severe")),
    TaskSpec("age", "regression"),
]


def make_manifest(root: Path | None = None) -> Manifest:
    rows = [
        {
            "id": "001",
            "image": "img/a.png",
            "texts": ["Small left effusion.", "No nodule."],
            "labels.findings": [1.0, 0.0, 0.0],
            "label_mask.findings": [True, True, False],
            "text_labels.findings": [[1, 0, 0], [0, 0, 0]],
            "labels.grade": 1,
            "labels.age": 63.5,
            "group": "p1",
            "split": "train",
            "fold": 0,
            "source": "synthetic",
            "extra": "kept",
        },
        {
            "id": "002",
            "image": "img/b.dcm",
            "texts": ["Nodule, right upper zone."],
            "labels.findings": [0.0, 1.0, 1.0],
            "label_mask.findings": [True, True, True],
            "text_labels.findings": [[0, 1, 0]],
            "labels.grade": -1,
            "labels.age": float("nan"),
            "group": "p1",
            "split": "test",
            "fold": -1,
            "source": "synthetic",
            "extra": "also kept",
        },
        {
            "id": "003",
            "image": "img/c.npy",
            "texts": [],
            "labels.findings": None,
            "label_mask.findings": None,
            "text_labels.findings": [],
            "labels.grade": 2,
            "labels.age": 40.0,
            "group": "p2",
            "split": "",
            "fold": 2,
            "source": "other",
            "extra": "",
        },
    ]
    return Manifest.from_records(rows, TASKS, root)


def test_taskspec_base_novel_and_errors() -> None:
    spec = TASKS[0]
    assert spec.base == ("effusion", "nodule")
    assert spec.base_indices == [0, 1]
    assert spec.novel_indices == [2]
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ManifestError, match="kind"):
        TaskSpec("x", "binary", ("a",))  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match="not in classes"):
        TaskSpec("x", "multilabel", ("a",), novel_classes=("b",))
    with pytest.raises(ManifestError, match="both base and novel"):
        TaskSpec("x", "multilabel", ("a", "b"), base_classes=("a",), novel_classes=("a",))
    with pytest.raises(ManifestError, match="unknown keys"):
        TaskSpec.from_dict({"name": "x", "kind": "multiclass", "classes": ["a"], "colour": 1})
    assert TaskSpec("r", "regression").num_classes == 1


def test_defaults_are_filled() -> None:
    m = Manifest(pd.DataFrame({"id": ["a", "b"], "image": ["x.png", "y.png"]}))
    assert list(m.records["group"]) == ["a", "b"]
    assert list(m.records["fold"]) == [-1, -1]
    assert list(m.records["split"]) == ["", ""]
    assert [list(t) for t in m.records["texts"]] == [[], []]
    assert validate_manifest(m).ok
    with pytest.raises(ManifestError, match="image"):
        Manifest(pd.DataFrame({"id": ["a"]}))


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_round_trip_all_formats(tmp_path: Path, ext: str) -> None:
    m = make_manifest(root=tmp_path)
    assert validate_manifest(m).ok, validate_manifest(m).format()
    path = write_manifest(m, tmp_path / f"manifest.{ext}")
    back = read_manifest(path)
    assert validate_manifest(back).ok, validate_manifest(back).format()
    assert back.tasks == m.tasks
    assert back.root == tmp_path.resolve()
    assert back.hash() == m.hash()
    assert list(back.ids) == ["001", "002", "003"]  # leading zeros survive CSV/JSONL
    for task in m.tasks:
        np.testing.assert_array_equal(back.label_matrix(task), m.label_matrix(task))
        np.testing.assert_array_equal(back.label_mask(task), m.label_mask(task))
    assert [list(t) for t in back.records["texts"]] == [list(t) for t in m.records["texts"]]
    assert list(back.records["extra"]) == ["kept", "also kept", ""]
    if ext != "parquet":
        assert sidecar_path(path).is_file()


def test_parquet_metadata_holds_tasks_and_relative_root(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    data_root.mkdir()
    m = make_manifest(root=data_root)
    path = write_manifest(m, tmp_path / "meta" / "m.parquet")
    meta = json.loads(pq.read_schema(path).metadata[b"medvl"])
    assert meta["format_version"] == 1
    assert meta["root"] == "../data"
    assert [t["name"] for t in meta["tasks"]] == ["findings", "grade", "age"]
    assert read_manifest(path).root == data_root.resolve()
    assert read_manifest(path, root="/elsewhere").root == Path("/elsewhere")


def test_hash_changes_with_content_not_root(tmp_path: Path) -> None:
    a = make_manifest(root=tmp_path)
    b = make_manifest(root=tmp_path / "x")
    assert a.hash() == b.hash()
    c = a.copy()
    c.records.loc[0, "labels.grade"] = 2
    assert c.hash() != a.hash()
    d = a.copy()
    d.records.at[1, "texts"] = ["Different."]
    assert d.hash() != a.hash()


def test_csv_without_sidecar_infers_tasks(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        'id,image,texts,labels.f,labels.c,labels.r\n'
        'a,a.png,"[""x""]","[1, 0]",2,0.5\n'
        'b,b.png,"[""y"", ""z""]","[0, 1]",0,1.25\n'
    )
    m = read_manifest(path)
    assert m.tasks["f"].kind == "multilabel" and m.tasks["f"].num_classes == 2
    assert m.tasks["c"].kind == "multiclass" and m.tasks["c"].classes == ("0", "1", "2")
    assert m.tasks["r"].kind == "regression"
    assert validate_manifest(m).ok
    assert [list(t) for t in m.records["texts"]] == [["x"], ["y", "z"]]


def test_jsonl_accepts_json_string_lists(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    rows = [{"id": 1, "image": "a.png", "texts": '["one"]'}, {"id": 2, "image": "b.png", "texts": ["two"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    m = read_manifest(path)
    assert list(m.ids) == ["1", "2"]
    assert [list(t) for t in m.records["texts"]] == [["one"], ["two"]]
    assert validate_manifest(m).ok


def test_bad_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.parquet")
    with pytest.raises(ManifestError, match="format"):
        (tmp_path / "m.txt").write_text("x")
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "image": "a.png"}\n{oops\n')
    with pytest.raises(ManifestError, match="line 2"):
        read_manifest(tmp_path / "bad.jsonl")


def test_label_arrays() -> None:
    m = make_manifest()
    np.testing.assert_array_equal(m.label_matrix("findings"), [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(
        m.label_mask("findings"), [[True, True, False], [True, True, True], [False, False, False]]
    )
    np.testing.assert_array_equal(m.label_matrix("grade"), [1, -1, 2])
    np.testing.assert_array_equal(m.label_mask("grade"), [True, False, True])
    np.testing.assert_array_equal(m.label_mask("age"), [True, False, True])
    assert m.label_matrix("age").dtype == np.float32
    with pytest.raises(ManifestError, match="unknown task"):
        m.label_matrix("nope")


def test_subset_split_fold() -> None:
    m = make_manifest()
    assert list(m.subset(np.array([True, False, True])).ids) == ["001", "003"]
    assert list(m.subset([2, 0]).ids) == ["003", "001"]
    assert list(m.split("test").ids) == ["002"]
    assert list(m.fold(2).ids) == ["003"]
    assert list(m.fold(2, exclude=True).ids) == ["001"]
    with pytest.raises(ManifestError, match="shape"):
        m.subset(np.array([True]))


def test_image_type_inference() -> None:
    got = infer_image_type(["a/B.PNG", "c.dcm", "x.npy", "s.h5", "t.safetensors", "u.pt", "noext"])
    assert list(got) == ["image", "dicom", "array", "feature_bag", "feature_bag", "feature_bag", ""]


def _issues(m: Manifest, **kw: object) -> set[tuple[str | None, str]]:
    report = validate_manifest(m, **kw)  # type: ignore[arg-type]
    return {(e.record_id, e.column) for e in report.errors}


@pytest.mark.parametrize(
    ("change", "column", "fragment"),
    [
        ({"id": "002"}, "id", "duplicate id"),
        ({"image": "../outside.png"}, "image", "escapes"),
        ({"image": "/etc/passwd.png"}, "image", "escapes"),
        ({"image": "img/../../x.png"}, "image", "escapes"),
        ({"image": ""}, "image", "empty"),
        ({"image": "noextension"}, "image_type", "cannot infer"),
        ({"image_type": "video"}, "image_type", "unknown image_type"),
        ({"texts": ["ok", "  "]}, "texts", "empty text"),
        ({"texts": "not a list"}, "texts", "must be a list"),
        ({"texts": [1, 2]}, "texts", "list of string"),
        ({"labels.findings": [1.0, 0.0]}, "labels.findings", "expected 3"),
        ({"labels.findings": [1.0, 0.0, 2.0]}, "labels.findings", "[0, 1]"),
        ({"labels.grade": 3}, "labels.grade", "out of range"),
        ({"labels.grade": -2}, "labels.grade", "out of range"),
        ({"labels.grade": 1.5}, "labels.grade", "integer"),
        ({"labels.grade": "high"}, "labels.grade", "must be a number"),
        ({"labels.age": float("inf")}, "labels.age", "finite"),
        ({"label_mask.findings": [True]}, "label_mask.findings", "expected 3"),
        ({"text_labels.findings": [[1, 0, 0]]}, "text_labels.findings", "2 texts"),
        ({"text_labels.findings": [[1, 0], [0, 0]]}, "text_labels.findings", "3 values"),
        ({"group": ""}, "group", "empty"),
        ({"labels.grade": [1, 2]}, "labels.grade", "must be a number"),
        ({"label_mask.grade": "yes"}, "label_mask.grade", "true/false"),
        ({"split": "training"}, "split", "unknown split"),
        ({"fold": -3}, "fold", "integer >= -1"),
    ],
)
def test_validation_names_record_and_column(change: dict[str, object], column: str, fragment: str) -> None:
    m = make_manifest()
    for key, value in change.items():
        if key not in m.records.columns:
            m.records[key] = pd.Series([True] * len(m), dtype=object)
        m.records[key] = m.records[key].astype(object)
        m.records.at[0, key] = value  # type: ignore[index]
    report = validate_manifest(m)
    assert not report.ok
    rid = str(m.records.at[0, "id"])
    hits = [e for e in report.errors if e.column == column and e.record_id == rid]
    assert hits, report.format()
    assert any(fragment in e.message for e in hits), report.format()
    assert f"record '{rid}'" in report.format()
    assert 0 in report.bad_rows
    if change != {"id": "002"}:  # a duplicate id marks both records
        assert list(report.bad_rows) == [0]
    with pytest.raises(ManifestError, match=rid):
        report.raise_if_errors()


def test_require_texts_and_labels() -> None:
    m = make_manifest()
    assert validate_manifest(m).ok
    assert ("003", "texts") in _issues(m, require_texts=True)
    issues = _issues(m, require_labels=["grade", "findings"])
    assert ("002", "labels.grade") in issues
    assert ("003", "labels.findings") in issues
    assert (None, "labels.missing") in _issues(m, require_labels=["missing"])


def test_undeclared_and_missing_label_columns() -> None:
    m = make_manifest()
    m.records["labels.extra"] = 1
    assert (None, "labels.extra") in _issues(m)
    m2 = make_manifest()
    m2.records = m2.records.drop(columns=["labels.age"])
    assert (None, "labels.age") in _issues(m2)


def test_nan_multilabel_needs_mask() -> None:
    m = make_manifest()
    m.records = m.records.drop(columns=["label_mask.findings"])
    m.records.at[0, "labels.findings"] = [1.0, float("nan"), 0.0]
    assert ("001", "labels.findings") in _issues(m)


def test_validation_is_vectorised_on_large_manifest() -> None:
    n = 100_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "image": [f"img/{i}.png" for i in range(n)],
            "texts": [["a caption"]] * n,
            "labels.f": list(rng.integers(0, 2, size=(n, 3)).astype(float)),
            "labels.c": rng.integers(0, 4, size=n),
        }
    )
    m = Manifest(df, [TaskSpec("f", "multilabel", ("a", "b", "c")), TaskSpec("c", "multiclass", tuple("abcd"))])
    df.loc[73_456, "labels.c"] = 9
    m = Manifest(df, m.tasks)
    report = validate_manifest(m)
    assert [(e.record_id, e.column) for e in report.errors] == [("r73456", "labels.c")]
    assert m.label_matrix("f").shape == (n, 3)


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_empty_manifest_round_trip(tmp_path: Path, ext: str) -> None:
    m = make_manifest().subset(np.zeros(3, dtype=bool))
    assert len(m) == 0 and validate_manifest(m).ok
    back = read_manifest(write_manifest(m, tmp_path / f"e.{ext}"))
    assert len(back) == 0 and validate_manifest(back).ok
    assert back.hash() == m.hash()
    assert back.label_matrix("findings").shape == (0, 3)


def test_all_null_list_columns() -> None:
    m = Manifest.from_records(
        [{"id": "a", "image": "a.png", "texts": [], "labels.f": None, "text_labels.f": []}],
        [TaskSpec("f", "multilabel", ("x", "y"))],
    )
    assert validate_manifest(m).ok
    np.testing.assert_array_equal(m.label_mask("f"), [[False, False]])


_ID_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and bool(s)
)
_CAPTION = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(lambda s: bool(s.strip()))


@st.composite
def random_manifests(draw: st.DrawFn) -> Manifest:
    ids = draw(st.lists(_ID_TEXT, min_size=1, max_size=8, unique=True))
    n_classes = draw(st.integers(1, 4))
    rows = []
    for i, rid in enumerate(ids):
        texts = draw(st.lists(_CAPTION, max_size=3))
        rows.append(
            {
                "id": rid,
                "image": f"d/{i}.png",
                "texts": texts,
                "labels.m": [float(v) for v in draw(st.lists(st.sampled_from([0, 1]), min_size=n_classes, max_size=n_classes))],
                "labels.c": draw(st.integers(-1, 2)),
                "labels.r": draw(st.one_of(st.just(float("nan")), st.floats(-1e6, 1e6, allow_nan=False))),
                "group": draw(_ID_TEXT),
                "split": draw(st.sampled_from(["train", "val", "test", ""])),
                "fold": draw(st.integers(-1, 4)),
            }
        )
    tasks = [
        TaskSpec("m", "multilabel", tuple(f"k{i}" for i in range(n_classes))),
        TaskSpec("c", "multiclass", ("a", "b", "c")),
        TaskSpec("r", "regression"),
    ]
    return Manifest.from_records(rows, tasks)


@given(random_manifests(), st.sampled_from(["parquet", "csv", "jsonl"]))
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip_property(tmp_path: Path, m: Manifest, ext: str) -> None:
    assert validate_manifest(m).ok, validate_manifest(m).format()
    back = read_manifest(write_manifest(m, tmp_path / f"p.{ext}"))
    assert validate_manifest(back).ok, validate_manifest(back).format()
    assert back.hash() == m.hash()
    assert list(back.ids) == list(m.ids)
    assert [list(t) for t in back.records["texts"]] == [list(t) for t in m.records["texts"]]


def test_csv_malformed_list_cell_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('id,image,texts\na,a.png,"[""ok""]"\nb,b.png,"[""x""],[""y""]"\nc,c.png,"[""unclosed"""\n')
    m = read_manifest(path)
    assert list(m.records["texts"].iloc[0]) == ["ok"]
    issues = {(e.record_id, e.column) for e in validate_manifest(m).errors}
    assert issues == {("b", "texts"), ("c", "texts")}


def test_concat_manifests_partial_labels(tmp_path: Path) -> None:
    a = Manifest.from_records(
        [{"id": "a1", "image": "x/1.png", "texts": ["t"], "labels.f": [1, 0], "source": "A"}],
        [TaskSpec("f", "multilabel", ("p", "q"))],
        tmp_path / "dsA",
    )
    b = Manifest.from_records(
        [{"id": "b1", "image": "2.png", "texts": ["u"], "labels.g": 1, "source": "B", "fold": 3}],
        [TaskSpec("g", "multiclass", ("n", "y"))],
        tmp_path / "dsB",
    )
    both = concat_manifests([a, b], root=tmp_path)
    assert validate_manifest(both).ok, validate_manifest(both).format()
    assert list(both.records["image"]) == ["dsA/x/1.png", "dsB/2.png"]
    assert both.root == tmp_path.resolve()
    np.testing.assert_array_equal(both.label_mask("f"), [[True, True], [False, False]])
    np.testing.assert_array_equal(both.label_matrix("g"), [-1, 1])
    np.testing.assert_array_equal(both.label_mask("g"), [False, True])
    assert list(both.records["fold"]) == [-1, 3]
    back = read_manifest(write_manifest(both, tmp_path / "both.parquet"))
    assert back.hash() == both.hash()
    with pytest.raises(ManifestError, match="different roots"):
        concat_manifests([a, b])
    with pytest.raises(ManifestError, match="not inside"):
        concat_manifests([a, b], root=tmp_path / "dsA")
    clash = Manifest(b.records, [TaskSpec("g", "multiclass", ("n", "y", "z"))], b.root)
    b2 = Manifest(b.records.assign(**{"labels.g": 0}), [TaskSpec("g", "multiclass", ("n", "y"))], b.root)
    with pytest.raises(ManifestError, match="differs"):
        concat_manifests([b2, clash], root=tmp_path)
