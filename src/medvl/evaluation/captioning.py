"""Captioning / report generation: language metrics and clinical efficacy of generated text.

Language metrics are pycocoevalcap's scorers (the COCO caption evaluation code that
CLIP_benchmark and report-generation papers use): BLEU-1…4 (``Bleu(4)``, corpus level), ROUGE-L
(``Rouge``, β = 1.2, mean over images) and CIDEr (``Cider``, CIDEr-D with IDF from the references of
the evaluated set — a corpus statistic, 0 for a set of one image). Texts are tokenised here by
:func:`coco_tokenize` (lower case; words, numbers and intra-word ``-``/``'`` kept; punctuation
dropped), the same reduction as pycocoevalcap's PTB tokenizer without its Java dependency.

Clinical efficacy (CE) labels the generated text with medvl's report labeller
(:class:`medvl.data.labeller.ReportLabeller`, 14 CheXpert observations) and compares the positive
mentions with the truth per record: either image labels of a multilabel task whose classes map to
CheXpert observations (the synthetic findings via ``SYNTHETIC_TO_CHEXPERT``, or classes named
like the observations), or the labeller's reading of the reference text. Evaluated classes: the
observation groups the truth can express (see :func:`ce_truth_from_labels`), plus ``No Finding``
(no positive observation other than Support Devices).
Micro P/R/F1 pool every (record, class) decision; macro averages per-class F1 (0 where a class
has no positive truth or prediction).

Two image-independent CE baselines come with every result (:func:`ce_baselines`): *always normal*
(every record predicted ``No Finding`` only: the modal normal report) and *shuffled images* (the
generated texts scored against the truth of randomly permuted records, mean over seeded
permutations: what the same report distribution earns without looking at the image). A model
whose reports depend on the image beats both; one that writes plausible reports regardless of the
image only beats the first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["caption_metrics", "ce_baselines", "ce_truth_from_labels", "clinical_efficacy", "coco_tokenize"]

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
NO_FINDING = "No Finding"


def coco_tokenize(text: str) -> str:
    """Lower-cased words joined by single spaces, punctuation removed (PTB-tokenizer equivalent)."""
    return " ".join(_WORD.findall(text.lower()))


def caption_metrics(generated: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``bleu_1``…``bleu_4``, ``rouge_l`` and ``cider`` of ``generated[i]`` against ``references[i]``.

    Raises ``ValueError`` for mismatched lengths, an empty set or a record without references.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError("caption metrics need pycocoevalcap: pip install 'medvl[captioning]'") from exc

    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts but {len(references)} reference lists")
    if not generated:
        raise ValueError("no generated texts to score")
    res: dict[int, list[str]] = {}
    gts: dict[int, list[str]] = {}
    for i, (gen, refs) in enumerate(zip(generated, references, strict=True)):
        tokens = [coco_tokenize(r) for r in refs if coco_tokenize(r)]
        if not tokens:
            raise ValueError(f"record {i} has no non-empty reference text")
        gts[i] = tokens
        res[i] = [coco_tokenize(gen)]
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
    out["rouge_l"] = float(rouge)
    out["cider"] = float(cider)
    return out


def _chexpert_name(name: str) -> str | None:
    from medvl.data.labeller.rules import CHEXPERT_CLASSES

    wanted = name.replace("_", " ").strip().lower()
    return next((c for c in CHEXPERT_CLASSES if c.lower() == wanted), None)


def ce_truth_from_labels(labels: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-record truth (N, K) over the observation groups that multilabel image labels (N, C) express.

    A class maps through :data:`medvl.data.labeller.agreement.SYNTHETIC_TO_CHEXPERT` or by name
    (``pleural_effusion`` → Pleural Effusion); an unmappable class is an error naming it. A class
    written as several observations (the synthetic consolidation: Consolidation or Pneumonia) is one
    group ``"Consolidation/Pneumonia"``, found when the labeller reports any of them; classes sharing
    an observation (nodule, mass → Lung Lesion) share its group. ``No Finding`` is added.
    """
    from medvl.data.labeller.agreement import SYNTHETIC_TO_CHEXPERT

    mapping: dict[str, tuple[str, ...]] = {}
    for c in classes:
        if c in SYNTHETIC_TO_CHEXPERT:
            mapping[c] = SYNTHETIC_TO_CHEXPERT[c]
        elif (name := _chexpert_name(c)) is not None:
            mapping[c] = (name,)
        else:
            raise ValueError(f"class {c!r} maps to no CheXpert observation; clinical efficacy cannot score it")
    groups = sorted({"/".join(obs) for obs in mapping.values() if obs != (NO_FINDING,)})
    names = [*groups, NO_FINDING]
    truth = np.zeros((labels.shape[0], len(names)), dtype=bool)
    index = {n: i for i, n in enumerate(names)}
    positive = np.asarray(labels) > 0.5
    for j, c in enumerate(classes):
        if mapping[c] != (NO_FINDING,):
            truth[:, index["/".join(mapping[c])]] |= positive[:, j]
    abnormal = [index[g] for g in groups if g != "Support Devices"]
    truth[:, index[NO_FINDING]] = ~truth[:, abnormal].any(axis=1) if abnormal else True
    return truth, names


def _labelled(texts: Sequence[str], names: Sequence[str], uncertain_positive: bool) -> np.ndarray:
    from medvl.data.labeller import ReportLabeller

    labeller = ReportLabeller()
    codes = np.stack([labeller.label_text(t) if t.strip() else np.full(len(labeller.classes), np.nan) for t in texts])
    found = (codes == 1) | ((codes == -1) if uncertain_positive else False)
    out = np.zeros((len(texts), len(names)), dtype=bool)
    for k, group in enumerate(names):  # a group ("Consolidation/Pneumonia") is found when any member is
        for obs in group.split("/"):
            out[:, k] |= found[:, labeller.classes.index(obs)]
    return out


def clinical_efficacy(
    generated: Sequence[str],
    truth: np.ndarray,
    names: Sequence[str],
    *,
    uncertain_positive: bool = False,
) -> dict[str, Any]:
    """CE precision/recall/F1 of the observations the labeller finds in ``generated`` vs ``truth`` (N, K).

    ``uncertain_positive`` counts hedged mentions as positive (default: only definite mentions).
    Returns ``{"metrics": {...}, "per_class": {name: {precision, recall, f1, support}}}``.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != (len(generated), len(names)):
        raise ValueError(f"truth has shape {truth.shape}, expected {(len(generated), len(names))}")
    pred = _labelled(generated, names, uncertain_positive)
    return _prf(pred, truth, names)


def ce_baselines(
    generated: Sequence[str],
    truth: np.ndarray,
    names: Sequence[str],
    *,
    shuffles: int = 20,
    seed: int = 0,
    uncertain_positive: bool = False,
) -> dict[str, float]:
    """CE F1 of two image-independent baselines on the same truth (N, K) as :func:`clinical_efficacy`.

    ``always_normal/…``: every record predicted ``No Finding`` and nothing else (needs ``No Finding``
    among ``names``). ``shuffled/…``: ``generated`` scored against the truth of permuted records,
    mean micro/macro F1 over ``shuffles`` permutations drawn from ``numpy.random.default_rng(seed)``
    (left out when ``shuffles`` is 0). Keys: ``always_normal/f1_micro``, ``always_normal/f1_macro``,
    ``shuffled/f1_micro``, ``shuffled/f1_macro``.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != (len(generated), len(names)):
        raise ValueError(f"truth has shape {truth.shape}, expected {(len(generated), len(names))}")
    found = _labelled(generated, names, uncertain_positive) if shuffles > 0 else np.zeros_like(truth)
    return _baselines(found, truth, names, shuffles=shuffles, seed=seed)


def _baselines(found: np.ndarray, truth: np.ndarray, names: Sequence[str], *, shuffles: int,
               seed: int) -> dict[str, float]:
    """:func:`ce_baselines` from the labeller's findings ``found`` (N, K) of the generated texts."""
    out: dict[str, float] = {}
    if NO_FINDING in names:
        normal = np.zeros_like(truth)
        normal[:, list(names).index(NO_FINDING)] = True
        scores = _prf(normal, truth, names)["metrics"]
        out.update({"always_normal/f1_micro": scores["f1_micro"], "always_normal/f1_macro": scores["f1_macro"]})
    if shuffles > 0 and len(found):
        rng = np.random.default_rng(seed)
        runs = [_prf(found, truth[rng.permutation(len(truth))], names)["metrics"] for _ in range(shuffles)]
        out["shuffled/f1_micro"] = float(np.mean([r["f1_micro"] for r in runs]))
        out["shuffled/f1_macro"] = float(np.mean([r["f1_macro"] for r in runs]))
    return out


def labeller_truth(references: Sequence[str], names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Truth for CE from the labeller's reading of the reference texts (every observation when ``names`` is None)."""
    from medvl.data.labeller.rules import CHEXPERT_CLASSES

    chosen = list(names) if names is not None else list(CHEXPERT_CLASSES)
    return _labelled(references, chosen, False), chosen


def _prf(pred: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    def scores(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        t, hit = truth[:, k], pred[:, k]
        tp, fp, fn = int((t & hit).sum()), int((~t & hit).sum()), int((t & ~hit).sum())
        prec, rec, f1 = scores(tp, fp, fn)
        per_class[name] = {"precision": prec, "recall": rec, "f1": f1, "support": int(t.sum())}
    tp, fp, fn = int((truth & pred).sum()), int((~truth & pred).sum()), int((truth & ~pred).sum())
    p, r, f = scores(tp, fp, fn)
    metrics = {"precision_micro": p, "recall_micro": r, "f1_micro": f,
               "f1_macro": float(np.mean([v["f1"] for v in per_class.values()]))}
    return {"metrics": metrics, "per_class": per_class}


def reference_texts(records: Any, column: str | None, sections: Sequence[str] | None) -> list[list[str]]:
    """References per record: its ``texts`` joined into one text (``column`` None) or a text column,
    reduced to the report ``sections`` when the text has section headers."""
    from medvl.data.labeller import select_text

    out: list[list[str]] = []
    values = records["texts"] if column is None else records[column]
    for value in values:
        if column is None:
            text = " ".join(str(t) for t in (value if value is not None else []))
        else:
            text = "" if value is None else str(value)
        if sections:
            parts = select_text(text, tuple(sections), "last_paragraph")
            text = " ".join(t for _, t in parts) or text
        out.append([text])
    return out


def summarize(result: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``name → value`` of a captioning result (for tables)."""
    return {k: float(v) for k, v in result.get("metrics", {}).items()}


def run_captioning(model: Any, dataset: Any, references: Sequence[Sequence[str]], options: Any,
                   labels: Mapping[str, np.ndarray] | None = None,
                   classes: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Generate one text per image of ``dataset`` with ``model`` (a ``DualEncoder`` with a decoder)
    and score it: language metrics against ``references`` and clinical efficacy (module docstring).

    ``labels``/``classes`` give the multilabel tasks available as CE truth. ``options`` is a
    :class:`medvl.config.evaluation.CaptioningOptions`. Returns ``{"metrics", "options", "info"}``.
    """
    import torch
    from torch.utils.data import DataLoader

    from medvl.data.dataset import collate

    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, collate_fn=collate)
    generated: list[str] = []
    kept: list[int] = []
    for batch in loader:
        if not batch["ids"]:
            continue
        inputs = {k: v.to(model.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        generated += model.generate(inputs, method=options.method, max_length=options.max_length,
                                    num_beams=options.num_beams, length_penalty=options.length_penalty,
                                    temperature=options.temperature, top_k=options.top_k,
                                    no_repeat_ngram=options.no_repeat_ngram, seed=options.seed)
        kept += batch["index"].tolist()
    refs = [list(references[i]) for i in kept]
    metrics = caption_metrics(generated, refs)
    info: dict[str, Any] = {"n_images": len(generated), "n_skipped": len(references) - len(kept)}
    truth_source, truth, names = None, None, None
    labels, classes = labels or {}, classes or {}
    candidates = [options.ce_task] if options.ce_task is not None else list(labels)
    for task in candidates:
        if task not in labels:
            raise ValueError(f"captioning.ce_task {task!r} has no labels in this data (tasks: {sorted(labels)})")
        try:
            truth, names = ce_truth_from_labels(np.asarray(labels[task])[kept], classes[task])
        except ValueError:
            if options.ce_task is not None:
                raise
            continue
        truth_source = f"labels.{task}"
        break
    if truth is None or names is None:
        truth, names = labeller_truth([" ".join(r) for r in refs])
        truth_source = "labeller(reference)"
    found = _labelled(generated, names, options.uncertain_positive)  # read once: CE and its baselines
    ce = _prf(found, np.asarray(truth, dtype=bool), names)
    metrics.update({f"ce/{k}": v for k, v in ce["metrics"].items()})
    baselines = _baselines(found, np.asarray(truth, dtype=bool), names, shuffles=options.ce_shuffles,
                           seed=options.seed)
    metrics.update({f"ce/{k}": v for k, v in baselines.items()})
    info.update({"ce_truth": truth_source, "ce_classes": list(names), "ce_per_class": ce["per_class"],
                 "examples": [{"id": dataset.ids[i], "generated": g, "reference": r[0]}
                              for i, g, r in list(zip(kept, generated, refs, strict=True))[: options.n_examples]]})
    return {"metrics": metrics, "options": options.model_dump(mode="json"), "info": info}
