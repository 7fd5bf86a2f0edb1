"""Zero-shot: prompt files, class-embedding rule, base/novel subsets, hybrid mode, separable data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvl.evaluation.embeddings import EmbeddingSet, l2_normalize
from medvl.evaluation.zeroshot import (
    PromptError,
    build_class_embeddings,
    builtin_prompt_sets,
    evaluate_zeroshot,
    load_prompts,
)


def test_builtin_sets_load_and_cover_synthetic_findings() -> None:
    from medvl.data.synthetic import FINDINGS

    assert {"chexpert", "synthetic_findings"} <= set(builtin_prompt_sets())
    ps = load_prompts("synthetic_findings")
    for f in FINDINGS:
        assert ps.prompts_for(f)
    chex = load_prompts("chexpert")
    assert chex.prompts_for("pleural_effusion")  # case/underscore-insensitive match
    assert "normal chest x-ray" in chex.prompts_for("No Finding")


def test_prompt_file_rules(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("templates: ['{}', 'a photo of {}']\nclasses:\n  cat: [cat, kitty]\n  dog: {prompts: [a dog]}\n")
    ps = load_prompts(f)
    assert ps.prompts_for("cat") == ["cat", "a photo of cat", "kitty", "a photo of kitty"]
    assert ps.prompts_for("dog") == ["a dog"]
    with pytest.raises(PromptError, match="no prompts for class 'bird'"):
        ps.prompts_for("bird")
    assert ps.prompts_for("big_bird", fallback_to_class_name=True) == ["big bird", "a photo of big bird"]
    f.write_text("templates: ['no placeholder']\nclasses: {a: [a]}\n")
    with pytest.raises(PromptError, match="templates"):
        load_prompts(f)
    with pytest.raises(PromptError, match="built-in prompt files"):
        load_prompts("no_such_set")


def test_class_embedding_is_renormalised_mean_of_normalised_prompts(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("classes:\n  a: [x, y]\n  b: [z]\n")
    table = {"x": np.array([3.0, 0.0]), "y": np.array([0.0, 1.0]), "z": np.array([0.0, -2.0])}
    emb, used = build_class_embeddings(load_prompts(f), ["a", "b"], lambda ps: np.stack([table[p] for p in ps]))
    # DLILP's bug: the mean of normalised prompts is not re-normalised; here it must be
    np.testing.assert_allclose(emb[0], np.array([1.0, 1.0]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(emb[1], [0.0, -1.0])
    assert used == {"a": ["x", "y"], "b": ["z"]}


def _separable(n_per: int = 20, multilabel: bool = False) -> tuple[EmbeddingSet, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = l2_normalize(rng.normal(size=(4, 16)))
    y = np.repeat(np.arange(4), n_per)
    x = centers[y] + 0.05 * rng.normal(size=(len(y), 16))
    classes = ["a", "b", "c", "d"]
    if multilabel:
        labels = np.eye(4, dtype=np.float32)[y]
        spec = {"kind": "multilabel", "classes": classes, "novel_classes": ["d"]}
    else:
        labels = y
        spec = {"kind": "multiclass", "classes": classes, "novel_classes": ["c", "d"]}
    emb = EmbeddingSet.from_arrays(x, labels={"t": labels}, tasks={"t": spec})
    return emb, centers


def test_separable_multiclass_with_base_novel() -> None:
    emb, centers = _separable()
    res = evaluate_zeroshot(emb, "t", class_emb=centers, prompts_used={"a": ["x"]})
    m = res["metrics"]
    assert m["t/all/accuracy"] == 1.0 and m["t/base/accuracy"] == 1.0 and m["t/novel/accuracy"] == 1.0
    assert res["info"]["base"]["classes"] == ["a", "b"] and res["info"]["novel"]["classes"] == ["c", "d"]
    assert res["options"]["prompts"] == {"a": ["x"]}
    # a wrong class embedding for "c" is only visible in the subsets containing "c"
    wrong = centers.copy()
    wrong[2] = centers[0]
    m2 = evaluate_zeroshot(emb, "t", class_emb=wrong)["metrics"]
    assert m2["t/base/accuracy"] == 1.0 and m2["t/novel/accuracy"] < 1.0


def test_multilabel_and_hybrid_mode() -> None:
    emb, centers = _separable(multilabel=True)
    res = evaluate_zeroshot(emb, "t", class_emb=centers)
    assert res["metrics"]["t/all/map_macro"] == pytest.approx(1.0)
    # hybrid: base classes from prototype-head scores, novel from text
    proto = emb.labels["t"] * 5.0 - 2.5  # a perfect prototype head
    emb.logits["prototypes/t"] = proto.astype(np.float32)
    bad_text = np.roll(centers, 1, axis=0)  # text embeddings that are wrong for every class
    hyb = evaluate_zeroshot(emb, "t", class_emb=bad_text, mode="hybrid")
    assert hyb["metrics"]["t/base/map_macro"] == pytest.approx(1.0)
    assert hyb["metrics"]["t/novel/map_macro"] < 0.5
    assert hyb["info"]["base"]["scorer"] == "prototypes" and hyb["info"]["novel"]["scorer"] == "text"
    assert "all/skipped" in hyb["info"]
    with pytest.raises(ValueError, match="class embeddings"):
        evaluate_zeroshot(emb, "t", mode="text")


def test_zero_norm_embeddings_are_rejected_naming_the_row(tmp_path: Path) -> None:
    from medvl.evaluation.embeddings import EmbeddingSetError

    f = tmp_path / "p.yaml"
    f.write_text("classes:\n  a: [x, y]\n  b: [z]\n")
    table = {"x": np.array([1.0, 0.0]), "y": np.array([0.0, 0.0]), "z": np.array([0.0, 1.0])}
    with pytest.raises(EmbeddingSetError, match=r"prompt embeddings: rows 1 \('class a: y'\) have zero norm"):
        build_class_embeddings(load_prompts(f), ["a", "b"], lambda ps: np.stack([table[p] for p in ps]))
    cancel = {"x": np.array([1.0, 0.0]), "y": np.array([-1.0, 0.0]), "z": np.array([0.0, 1.0])}
    with pytest.raises(EmbeddingSetError, match=r"class embeddings.*rows 0 \('a'\)"):
        build_class_embeddings(load_prompts(f), ["a", "b"], lambda ps: np.stack([cancel[p] for p in ps]))
    img = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    emb = EmbeddingSet.from_arrays(img, image_ids=["r0", "r1", "r2"], labels={"t": np.array([0, 1, 0])},
                                   tasks={"t": {"kind": "multiclass", "classes": ["a", "b"]}})
    with pytest.raises(EmbeddingSetError, match=r"image_emb: rows 2 \('r2'\) have zero norm"):
        evaluate_zeroshot(emb, "t", class_emb=np.eye(2, dtype=np.float32))
    ok = emb.subset([0, 1])
    with pytest.raises(EmbeddingSetError, match=r"class embeddings of 't': rows 1 \('b'\)"):
        evaluate_zeroshot(ok, "t", class_emb=np.array([[1.0, 0.0], [0.0, 0.0]], np.float32))
    assert evaluate_zeroshot(ok, "t", class_emb=np.eye(2, dtype=np.float32))["metrics"]["t/all/accuracy"] == 1.0
