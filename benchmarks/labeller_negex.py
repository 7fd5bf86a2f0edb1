"""Report labeller vs a NegEx baseline on a hand-labelled sentence set (accuracy, not speed).

Run: ``.venv/bin/python -m benchmarks.labeller_negex [--sentences benchmarks/data/labeller_sentences.tsv]``

The sentence set (``benchmarks/data/labeller_sentences.tsv``, written for medvl, not from any
dataset) holds chest-radiograph sentences with their CheXpert-14 codes under medvl's documented
conventions, grouped by the phrasing they exercise: normality phrases scoping over a finding,
limitation phrases, lesions outside the lung, old fractures, clips, support devices, the scope of
backward triggers, plain negation, uncertainty, positives.

Three labellers share medvl's mention finder (observation phrases, exclusions, anatomical
mentions resolved by "enlarged"/"normal"), so the comparison isolates what decides a mention's
status:

* ``medvl``: :class:`medvl.data.labeller.ReportLabeller` (its NegEx/ConText-style triggers with
  pseudo-triggers, terminators, list-aware backward scope, normality and limitation phrases);
* ``negex``: every mention's status from ``pynegex`` (Chapman's NegEx with its English trigger set
  and speculation on — the library's documented use, one call per mention phrase): negated → 0,
  possible → -1, affirmed → 1;
* ``mentions``: every mention positive (the floor: no negation at all).

Prints, per labeller, the share of sentences labelled exactly right (overall and per group) and the
macro F1 over observations of detecting each status (positive, negative, uncertain).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medvl.data.labeller import CHEXPERT_CLASSES, ReportLabeller

SENTENCES = Path(__file__).parent / "data" / "labeller_sentences.tsv"
_STATUSES = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0}

Labels = dict[str, float]


def load_sentences(path: Path = SENTENCES) -> list[tuple[str, str, Labels]]:
    """``(group, sentence, {observation: code})`` per line of the TSV (``#`` lines are comments)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        group, sentence, labels = ([*line.split("\t"), ""])[:3]
        gold: Labels = {}
        for item in filter(None, labels.split(";")):
            name, code = item.split("=")
            if name not in CHEXPERT_CLASSES:
                raise ValueError(f"{path}:{number}: unknown observation {name!r}")
            gold[name] = float(code)
        rows.append((group, sentence, gold))
    return rows


def medvl_labeller(labeller: ReportLabeller | None = None) -> Callable[[str], Labels]:
    """medvl's sentence labeller."""
    lab = labeller or ReportLabeller()
    return lab.label_sentence


def _combine(codes: Labels, observation: str, value: float) -> None:
    from medvl.data.labeller.chexpert import aggregate_codes

    codes[observation] = aggregate_codes([codes.get(observation, value), value])


def negex_labeller(labeller: ReportLabeller | None = None) -> Callable[[str], Labels]:
    """medvl's mentions, each given the status pynegex assigns to it in the sentence."""
    import pynegex

    lab = labeller or ReportLabeller()
    flags = {"negated": 0.0, "possible": -1.0, "affirmed": 1.0}

    def label(sentence: str) -> Labels:
        codes: Labels = {}
        for mention in lab.mentions(sentence):
            if mention.trigger in ("normal", "global"):  # anatomy resolved by its qualifier, not a trigger
                _combine(codes, mention.observation, mention.value)
                continue
            result = pynegex.run(text=sentence, ent_tag=mention.text, triggerset_name="en")
            flag = result[0] if result else "affirmed"
            _combine(codes, mention.observation, flags.get(flag, 1.0))
        return codes

    return label


def mentions_only_labeller(labeller: ReportLabeller | None = None) -> Callable[[str], Labels]:
    """Every mention positive (anatomy still resolved): no negation or uncertainty at all."""
    lab = labeller or ReportLabeller()

    def label(sentence: str) -> Labels:
        codes: Labels = {}
        for mention in lab.mentions(sentence):
            _combine(codes, mention.observation, mention.value if mention.trigger == "normal" else 1.0)
        return codes

    return label


def score(label: Callable[[str], Labels], rows: list[tuple[str, str, Labels]]) -> dict[str, object]:
    """Exact-match share overall and per group, and macro F1 per status over observations."""
    exact = [label(sentence) == gold for _, sentence, gold in rows]
    groups: dict[str, list[bool]] = {}
    for (group, _, _), ok in zip(rows, exact, strict=True):
        groups.setdefault(group, []).append(ok)
    predictions = [label(sentence) for _, sentence, _ in rows]
    f1: dict[str, float] = {}
    for status, code in _STATUSES.items():
        per_class = []
        for name in CHEXPERT_CLASSES:
            truth = np.array([gold.get(name) == code for _, _, gold in rows])
            pred = np.array([p.get(name) == code for p in predictions])
            tp, fp, fn = int((truth & pred).sum()), int((~truth & pred).sum()), int((truth & ~pred).sum())
            if tp + fp + fn:
                per_class.append(2 * tp / (2 * tp + fp + fn))
        f1[status] = float(np.mean(per_class)) if per_class else float("nan")
    return {"exact": float(np.mean(exact)), "groups": {g: float(np.mean(v)) for g, v in groups.items()},
            "f1": f1, "n": len(rows)}


def compare(path: Path = SENTENCES) -> dict[str, dict[str, object]]:
    """Scores of medvl, the NegEx baseline and the mentions-only floor on the sentence set."""
    rows = load_sentences(path)
    return {"medvl": score(medvl_labeller(), rows), "negex": score(negex_labeller(), rows),
            "mentions": score(mentions_only_labeller(), rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=Path, default=SENTENCES)
    args = parser.parse_args(argv)
    results = compare(args.sentences)
    names = list(results)
    n = results["medvl"]["n"]
    print(f"{n} hand-labelled sentences ({args.sentences})\n")
    print(f"{'':<24}" + "".join(f"{name:>10}" for name in names))
    print(f"{'exact sentence match':<24}" + "".join(f"{results[m]['exact']:>10.3f}" for m in names))
    for status in _STATUSES:
        print(f"{'macro F1 ' + status:<24}" + "".join(f"{results[m]['f1'][status]:>10.3f}" for m in names))  # type: ignore[index]
    print("\nexact match per group:")
    for group in results["medvl"]["groups"]:  # type: ignore[attr-defined]
        print(f"  {group:<22}" + "".join(f"{results[m]['groups'][group]:>10.3f}" for m in names))  # type: ignore[index]


if __name__ == "__main__":
    main()
