"""Radiology reports for synthetic cases, with per-sentence and report-level mention labels.

A report has a FINDINGS and an IMPRESSION section. Each sentence carries a *status* per
finding it talks about, with CheXpert-style codes: ``1`` positive, ``0`` negated, ``-1``
uncertain (hedged); findings a sentence does not talk about are ``NOT_MENTIONED`` (-2).

The report describes the image *imperfectly*, as real reports do: a mild finding is often
hedged or not mentioned at all (and sometimes even negated: a missed finding), an absent
finding is occasionally hedged ("cannot exclude early pneumonia"), and neutral distractor
sentences (technique, comparison, degenerative change) carry no finding. Hence report-derived
labels differ from the image-level ground truth, as report-mined labels differ from the truth
in MIMIC-CXR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvl.data.synthetic.findings import FINDINGS, Finding, categorical, device_kinds

__all__ = [
    "NEGATIVE",
    "NOT_MENTIONED",
    "POSITIVE",
    "UNCERTAIN",
    "Report",
    "Sentence",
    "write_report",
]

POSITIVE, NEGATIVE, UNCERTAIN, NOT_MENTIONED = 1, 0, -1, -2

#: P(definite, hedged, omitted) of a present finding's mention, by severity (0 = devices).
_MENTION_P: dict[int, tuple[float, float, float]] = {
    0: (0.92, 0.0, 0.08),
    1: (0.40, 0.30, 0.30),
    2: (0.80, 0.12, 0.08),
    3: (0.96, 0.03, 0.01),
}
#: Findings that readers miss more often when mild.
_HARD_WHEN_MILD: dict[str, tuple[float, float, float]] = {
    "rib_fracture": (0.25, 0.2, 0.55),
    "nodule": (0.3, 0.35, 0.35),
    "pneumothorax": (0.35, 0.35, 0.3),
}
#: P(an omitted finding is explicitly, wrongly, negated).
_MISSED_NEGATION_P = 0.35
#: P(an absent finding is negated explicitly).
_NEGATION_P: dict[str, float] = {
    "cardiomegaly": 0.0,  # handled by "heart size is normal" statements
    "pleural_effusion": 0.75,
    "pneumothorax": 0.7,
    "consolidation": 0.6,
    "edema": 0.45,
    "atelectasis": 0.15,
    "nodule": 0.1,
    "mass": 0.08,
    "support_devices": 0.0,
    "rib_fracture": 0.12,
}
#: P(an absent finding is mentioned with a hedge, a false-positive uncertainty).
_FALSE_HEDGE_P: dict[str, float] = {
    "pleural_effusion": 0.02,
    "pneumothorax": 0.01,
    "consolidation": 0.04,
    "edema": 0.02,
    "atelectasis": 0.03,
    "nodule": 0.015,
}
_ACUTE = ("pleural_effusion", "pneumothorax", "consolidation", "edema")
_PARENCHYMAL = ("consolidation", "edema", "atelectasis", "nodule", "mass")
#: Order of topics in the FINDINGS section (before optional shuffling).
_TOPIC_ORDER = ("support_devices", "consolidation", "edema", "atelectasis", "nodule", "mass",
                "pleural_effusion", "pneumothorax", "cardiomegaly", "rib_fracture")
#: Order of importance in the IMPRESSION.
_IMPRESSION_ORDER = ("pneumothorax", "mass", "consolidation", "edema", "pleural_effusion", "cardiomegaly",
                     "rib_fracture", "nodule", "atelectasis", "support_devices")

_DISTRACTORS = (
    "Single frontal view of the chest.",
    "Comparison is made to the prior radiograph.",
    "No prior studies are available for comparison.",
    "Degenerative changes of the thoracic spine.",
    "Mild tortuosity of the thoracic aorta.",
    "Calcification of the aortic knob.",
    "The visualized upper abdomen is unremarkable.",
    "Surgical clips project over the right upper quadrant.",
    "The patient is slightly rotated.",
    "Nipple shadows project over the lung bases.",
    "Old healed left clavicular fracture.",
    "Portable technique limits assessment.",
)


@dataclass(frozen=True)
class Sentence:
    """One report sentence: its text, section, kind and per-finding status codes."""

    text: str
    section: str  # "findings" | "impression"
    kind: str  # "positive" | "hedged" | "negation" | "normal" | "distractor" | "mixed"
    status: tuple[tuple[str, int], ...] = ()

    def code(self, finding: str) -> int:
        """Status code of ``finding`` in this sentence (``NOT_MENTIONED`` when absent)."""
        return dict(self.status).get(finding, NOT_MENTIONED)


@dataclass(frozen=True)
class Report:
    """A report: ordered sentences of the FINDINGS then the IMPRESSION section."""

    sentences: tuple[Sentence, ...]

    @property
    def texts(self) -> list[str]:
        """Every sentence, in order (the captions of the record)."""
        return [s.text for s in self.sentences]

    @property
    def text(self) -> str:
        """The full report with section headers."""
        findings = " ".join(s.text for s in self.sentences if s.section == "findings")
        impression = " ".join(s.text for s in self.sentences if s.section == "impression")
        return f"FINDINGS: {findings}\nIMPRESSION: {impression}"

    def sentence_status(self) -> list[list[int]]:
        """(n_sentences, n_findings) status codes (1, 0, -1, or -2 not mentioned), ``FINDINGS`` order."""
        return [[s.code(f) for f in FINDINGS] for s in self.sentences]

    def sentence_labels(self) -> list[list[float]]:
        """(n_sentences, n_findings) 0/1: 1 where the sentence asserts the finding, definite or hedged
        (the "U-ones" policy); negated and unmentioned are 0."""
        return [[1.0 if code in (POSITIVE, UNCERTAIN) else 0.0 for code in row] for row in self.sentence_status()]

    def report_status(self) -> list[int]:
        """Per-finding status of the whole report: positive beats uncertain beats negated."""
        out = []
        for f in FINDINGS:
            codes = {s.code(f) for s in self.sentences}
            for code in (POSITIVE, UNCERTAIN, NEGATIVE):
                if code in codes:
                    out.append(code)
                    break
            else:
                out.append(NOT_MENTIONED)
        return out

    def report_labels(self) -> list[float]:
        """Report-derived 0/1 labels (U-ones): what a report-mining labeller would assign."""
        return [1.0 if c in (POSITIVE, UNCERTAIN) else 0.0 for c in self.report_status()]


# --------------------------------------------------------------------------------------------- phrases


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(0, len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _side(f: Finding, plural_bilateral: bool = False) -> str:
    if f.laterality == "bilateral":
        return "bilateral"
    return f.laterality


def _location(f: Finding, rng: np.random.Generator) -> str:
    """Anatomical location phrase of a zoned finding ("right lower lobe", "left mid lung", …)."""
    if f.laterality == "bilateral":
        return _pick(rng, (f"bilateral {f.zone} lobes", f"{f.zone} zones bilaterally", f"both {f.zone} lungs"))
    lobes = {"upper": "upper lobe", "middle": "middle lobe" if f.laterality == "right" else "lingula",
             "lower": "lower lobe"}
    zone_words = {"upper": "upper", "middle": "mid", "lower": "lower"}
    if f.zone == "middle" and f.laterality == "left" and rng.random() < 0.5:
        return "lingula"
    return _pick(rng, (f"{f.laterality} {lobes[f.zone]}", f"{f.laterality} {zone_words[f.zone]} lung",
                       f"{f.laterality} {zone_words[f.zone]} zone"))


def _positive(f: Finding, rng: np.random.Generator) -> str:
    """A definite mention of ``f`` (several templates per finding)."""
    sev = f.severity
    side = _side(f)
    if f.name == "cardiomegaly":
        adj = _pick(rng, [("mild", "slight"), ("moderate",), ("marked", "severe")][sev - 1])
        adv = ("mildly", "moderately", "markedly")[sev - 1]
        return _pick(rng, (f"{_cap(adj)} cardiomegaly.", f"The heart is {adv} enlarged.",
                           f"{_cap(adj)} enlargement of the cardiac silhouette.",
                           f"The cardiac silhouette is {adv} enlarged."))
    if f.name == "pleural_effusion":
        size = _pick(rng, [("small", "trace"), ("moderate",), ("large",)][sev - 1])
        noun = "pleural effusions" if side == "bilateral" else "pleural effusion"
        options = [f"{_cap(size)} {side} {noun}.", f"There is a {size} {side} {noun}." if side != "bilateral"
                   else f"There are {size} bilateral {noun}."]
        if sev == 1 and side != "bilateral":
            options.append(f"Blunting of the {side} costophrenic angle consistent with a small effusion.")
        if sev == 3:
            options.append(f"Large {side} {noun} with opacification of the lower hemithorax.")
        return _pick(rng, options)
    if f.name == "pneumothorax":
        size = _pick(rng, [("small", "tiny"), ("moderate",), ("large",)][sev - 1])
        where = _pick(rng, ("apical", "")) if sev == 1 else ""
        phrase = " ".join(w for w in (size, side, where, "pneumothorax") if w)
        options = [f"{_cap(phrase)}.", f"There is a {phrase}."]
        if sev >= 2:
            options.append(f"A visceral pleural line is seen in the {side} hemithorax, consistent with {size} pneumothorax.")
        if sev == 3:
            options.append(f"Large {side} pneumothorax with near-complete collapse of the lung.")
        return _pick(rng, options)
    if f.name == "consolidation":
        adj = _pick(rng, [("patchy", "subtle", "mild"), ("focal", "moderate"), ("dense", "extensive", "lobar")][sev - 1])
        noun = _pick(rng, ("consolidation", "airspace opacity", "airspace disease"))
        loc = _location(f, rng)
        return _pick(rng, (f"{_cap(adj)} {noun} in the {loc}.", f"There is {adj} {noun} in the {loc}.",
                           f"{_cap(adj)} {noun} in the {loc}, concerning for pneumonia.",
                           f"{_cap(loc)} {noun}, compatible with pneumonia."))
    if f.name == "edema":
        if sev == 1:
            return _pick(rng, ("Mild pulmonary edema.", "Mild interstitial edema.",
                               "Mild pulmonary vascular congestion with interstitial edema."))
        adj = ("moderate", "severe")[sev - 2]
        return _pick(rng, (f"{_cap(adj)} pulmonary edema.", f"There is {adj} pulmonary edema.",
                           f"Perihilar haziness consistent with {adj} pulmonary edema.",
                           f"{_cap(adj)} interstitial and alveolar edema."))
    if f.name == "atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        base = "bases" if side == "bilateral" else f"{side} base"
        if sev == 3:
            lobe = "lower lobes" if side == "bilateral" else "lower lobe"
            return _pick(rng, (f"{_cap(side)} {lobe} collapse.", f"Dense {where} atelectasis with volume loss.",
                               f"{_cap(side)} lower lobe atelectasis with elevation of the hemidiaphragm."
                               if side != "bilateral" else "Dense bibasilar atelectasis with volume loss."))
        adj = ("mild", "moderate")[sev - 1]
        return _pick(rng, (f"{_cap(adj)} {where} atelectasis.", f"Linear atelectasis at the {base}.",
                           f"Plate-like atelectasis in the {side} lower lung." if side != "bilateral"
                           else "Bibasilar plate-like atelectasis.", f"{_cap(where)} subsegmental atelectasis."))
    if f.name == "nodule":
        mm = int(rng.integers(*((5, 9), (9, 15), (15, 25))[sev - 1]))
        loc = _location(f, rng)
        return _pick(rng, (f"A {mm} mm nodule in the {loc}.", f"{mm}-mm pulmonary nodule projecting over the {loc}.",
                           f"There is a {mm} mm nodular opacity in the {loc}."))
    if f.name == "mass":
        cm = int(rng.integers(*((3, 5), (5, 7), (7, 10))[sev - 1]))
        loc = _location(f, rng)
        return _pick(rng, (f"A {cm} cm mass in the {loc}.", f"Lobulated {cm} cm mass in the {loc}, concerning for malignancy.",
                           f"There is a {cm} cm mass projecting over the {loc}."))
    if f.name == "support_devices":
        kinds = device_kinds(f)
        if rng.random() < 0.3:
            return _pick(rng, ("Support devices are in standard position.", "Lines and tubes are in appropriate position."))
        parts = {
            "endotracheal tube": f"endotracheal tube terminates {int(rng.integers(3, 7))} cm above the carina",
            "central venous catheter": "internal jugular central venous catheter with tip in the SVC",
            "enteric tube": "enteric tube courses below the diaphragm into the stomach",
            "ECG leads": "monitoring leads overlie the chest",
            "pacemaker": "left chest wall pacemaker with lead in the right ventricle",
        }
        return _cap("; ".join(parts[k] for k in kinds)) + "."
    if f.name == "rib_fracture":
        ordinal = {"upper": ("third", "fourth"), "middle": ("fifth", "sixth"), "lower": ("seventh", "eighth")}
        rib = _pick(rng, ordinal[f.zone])
        adj = ("nondisplaced", "minimally displaced", "displaced")[sev - 1]
        return _pick(rng, (f"{_cap(adj)} fracture of the {side} lateral {rib} rib.",
                           f"Acute {adj} {side} {rib} rib fracture.",
                           f"There is a {adj} fracture of the lateral {side} {rib} rib."))
    raise ValueError(f"no templates for finding {f.name!r}")


def _hedged(f: Finding, rng: np.random.Generator) -> tuple[str, tuple[tuple[str, int], ...]]:
    """An uncertain mention of ``f``; may also hedge a second finding (differential)."""
    side = _side(f) or _pick(rng, ("right", "left"))
    status: tuple[tuple[str, int], ...] = ((f.name, UNCERTAIN),)
    if f.name == "cardiomegaly":
        text = _pick(rng, ("Borderline cardiomegaly.", "The heart size is possibly mildly enlarged.",
                           "The cardiac silhouette may be slightly enlarged."))
    elif f.name == "pleural_effusion":
        text = _pick(rng, (f"Possible small {side} pleural effusion.",
                           f"Blunting of the {side} costophrenic angle may reflect a small effusion.",
                           f"Cannot exclude a small {side} pleural effusion."))
    elif f.name == "pneumothorax":
        text = _pick(rng, (f"Possible tiny {side} apical pneumothorax.",
                           f"Questionable small {side} pneumothorax; a repeat radiograph is suggested."))
    elif f.name == "consolidation":
        loc = _location(f, rng) if f.zone else f"{side} lower lobe"
        if rng.random() < 0.35:
            text = f"Subtle opacity in the {loc} may represent atelectasis or early pneumonia."
            status = (("consolidation", UNCERTAIN), ("atelectasis", UNCERTAIN))
        else:
            text = _pick(rng, (f"Possible early consolidation in the {loc}.",
                               f"Cannot exclude early pneumonia in the {loc}.",
                               f"Hazy opacity in the {loc}, possibly early pneumonia."))
    elif f.name == "edema":
        text = _pick(rng, ("Possible mild interstitial edema.", "Questionable mild pulmonary edema.",
                           "Prominent interstitial markings may reflect mild edema."))
    elif f.name == "atelectasis":
        text = _pick(rng, ("Bibasilar opacities, likely atelectasis.", f"Possible {side} basilar atelectasis.",
                           f"Linear opacity at the {side} base may represent atelectasis."))
    elif f.name == "nodule":
        loc = _location(f, rng) if f.zone else f"{side} upper lobe"
        text = _pick(rng, (f"Possible nodular opacity in the {loc}; consider CT.",
                           f"Questionable nodule projecting over the {loc}."))
    elif f.name == "mass":
        loc = _location(f, rng)
        text = _pick(rng, (f"Possible mass in the {loc}.", f"Ill-defined opacity in the {loc}; a mass cannot be excluded."))
    elif f.name == "rib_fracture":
        text = _pick(rng, (f"Possible nondisplaced fracture of a {side} lateral rib.",
                           f"Questionable cortical irregularity of a {side} lateral rib, possibly a fracture."))
    else:
        text = _positive(f, rng)
        status = ((f.name, POSITIVE),)
    return text, status


_NEGATION_NOUNS: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("pleural effusion", "effusion"),
    "pneumothorax": ("pneumothorax",),
    "consolidation": ("focal consolidation", "consolidation", "airspace disease"),
    "edema": ("pulmonary edema", "edema"),
    "atelectasis": ("atelectasis",),
    "nodule": ("suspicious pulmonary nodule", "nodule"),
    "mass": ("mass",),
    "rib_fracture": ("displaced rib fracture", "rib fracture"),
}


def _negations(names: list[str], rng: np.random.Generator) -> list[Sentence]:
    """Explicit negations, grouping up to three findings per sentence ("No X, Y, or Z.")."""
    names = [names[i] for i in rng.permutation(len(names))]
    out = []
    while names:
        k = min(len(names), 1 + categorical(rng, (0.4, 0.4, 0.2)))
        group, names = names[:k], names[k:]
        nouns = [_pick(rng, _NEGATION_NOUNS[n]) for n in group]
        if len(nouns) == 1:
            body = nouns[0]
        elif len(nouns) == 2:
            body = f"{nouns[0]} or {nouns[1]}"
        else:
            body = f"{', '.join(nouns[:-1])}, or {nouns[-1]}"
        lead = _pick(rng, ("No ", "There is no ", "No evidence of "))
        out.append(Sentence(f"{lead}{body}.", "findings", "negation", tuple((n, NEGATIVE) for n in group)))
    return out


# --------------------------------------------------------------------------------------------- report


def write_report(findings: Sequence[Finding], rng: np.random.Generator) -> Report:
    """Write the report of a case whose ground-truth findings are ``findings``."""
    present = {f.name: f for f in findings}
    mode: dict[str, str] = {}
    for f in findings:
        probs = _HARD_WHEN_MILD.get(f.name, _MENTION_P[1]) if f.severity == 1 else _MENTION_P[f.severity]
        mode[f.name] = ("definite", "hedged", "omitted")[categorical(rng, probs)]
    for name, p in _FALSE_HEDGE_P.items():
        if name not in present and rng.random() < p:
            mode[name] = "false_hedge"

    by_topic: dict[str, list[Sentence]] = {t: [] for t in _TOPIC_ORDER}
    negated: list[str] = []
    for name in FINDINGS:
        m = mode.get(name)
        if m == "definite":
            by_topic[name].append(Sentence(_positive(present[name], rng), "findings", "positive", ((name, POSITIVE),)))
        elif m in ("hedged", "false_hedge"):
            f = present.get(name) or Finding(name, 1, _pick(rng, ("right", "left")) if name not in ("edema",) else "",
                                             "lower" if name in ("consolidation", "nodule") else "")
            text, status = _hedged(f, rng)
            by_topic[name].append(Sentence(text, "findings", "hedged", status))
        elif m == "omitted":
            if name in _NEGATION_NOUNS and rng.random() < _MISSED_NEGATION_P:
                negated.append(name)
        elif name not in present and rng.random() < _NEGATION_P[name]:
            negated.append(name)

    asserted = {n for n, m in mode.items() if m != "omitted"}
    normal: list[Sentence] = []
    if "cardiomegaly" not in asserted and rng.random() < 0.75:
        normal.append(Sentence(_pick(rng, ("Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
                                            "The heart is normal in size.")), "findings", "normal",
                               (("cardiomegaly", NEGATIVE),)))
    if not asserted & set(_PARENCHYMAL) and rng.random() < 0.6:
        normal.append(Sentence(_pick(rng, ("The lungs are clear.", "The lungs are well expanded and clear.")),
                               "findings", "normal", (("consolidation", NEGATIVE), ("edema", NEGATIVE))))
        negated = [n for n in negated if n not in ("consolidation", "edema")]
    if "rib_fracture" not in asserted and rng.random() < 0.15:
        normal.append(Sentence("No acute osseous abnormality.", "findings", "normal", (("rib_fracture", NEGATIVE),)))
        negated = [n for n in negated if n != "rib_fracture"]

    body: list[Sentence] = [s for t in _TOPIC_ORDER for s in by_topic[t]]
    body += _negations(negated, rng)
    body += normal
    if rng.random() < 0.4:  # free sentence order
        body = [body[i] for i in rng.permutation(len(body))]
    n_distractors = max(categorical(rng, (0.45, 0.4, 0.15)), 0 if body else 1)  # FINDINGS is never empty
    for i in rng.permutation(len(_DISTRACTORS))[:n_distractors]:
        position = int(rng.integers(0, len(body) + 1))
        body.insert(position, Sentence(_DISTRACTORS[int(i)], "findings", "distractor"))

    return Report(tuple(body) + tuple(_impression(present, mode, rng)))


def _short(f: Finding, rng: np.random.Generator) -> str:
    """Impression phrase (lower case, no period) of a definite finding."""
    side = _side(f)
    sev_word = {1: "mild", 2: "moderate", 3: "severe"}.get(f.severity, "")
    if f.name == "cardiomegaly":
        return f"{sev_word} cardiomegaly"
    if f.name == "pleural_effusion":
        size = ("small", "moderate", "large")[f.severity - 1]
        return f"{size} {side} pleural effusion" + ("s" if side == "bilateral" else "")
    if f.name == "pneumothorax":
        return f"{('small', 'moderate', 'large')[f.severity - 1]} {side} pneumothorax"
    if f.name == "consolidation":
        return f"{_location(f, rng)} pneumonia" if f.laterality != "bilateral" else "multifocal pneumonia"
    if f.name == "edema":
        return f"{sev_word} pulmonary edema"
    if f.name == "atelectasis":
        return "bibasilar atelectasis" if side == "bilateral" else f"{side} basilar atelectasis"
    if f.name == "nodule":
        return f"{_location(f, rng)} pulmonary nodule"
    if f.name == "mass":
        return f"{_location(f, rng)} mass, concerning for malignancy"
    if f.name == "support_devices":
        return "support devices in standard position"
    return f"{side} rib fracture"


def _impression(present: dict[str, Finding], mode: dict[str, str], rng: np.random.Generator) -> list[Sentence]:
    definite = [n for n in _IMPRESSION_ORDER if mode.get(n) == "definite"]
    hedged = [n for n in _IMPRESSION_ORDER if mode.get(n) in ("hedged", "false_hedge")]
    out: list[Sentence] = []
    i = 0
    while i < len(definite) and len(out) < 3:
        group = definite[i : i + (2 if rng.random() < 0.35 else 1)]
        i += len(group)
        phrases = [_short(present[n], rng) for n in group]
        out.append(Sentence(_cap(" with ".join(phrases)) + ".", "impression", "positive",
                            tuple((n, POSITIVE) for n in group)))
    if hedged and rng.random() < 0.6:
        name = hedged[0]
        what = {"consolidation": "early pneumonia", "pleural_effusion": "small pleural effusion",
                "pneumothorax": "small pneumothorax", "edema": "mild edema", "atelectasis": "atelectasis",
                "cardiomegaly": "mild cardiomegaly", "nodule": "pulmonary nodule", "mass": "mass",
                "rib_fracture": "rib fracture"}.get(name, name.replace("_", " "))
        text = _pick(rng, (f"Possible {what}.", f"{_cap(what)} cannot be excluded.", f"Findings may represent {what}."))
        out.append(Sentence(text, "impression", "hedged", ((name, UNCERTAIN),)))
    if not out:
        negate_acute = tuple((n, NEGATIVE) for n in _ACUTE)
        text = _pick(rng, ("No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                           "No acute cardiopulmonary abnormality."))
        out.append(Sentence(text, "impression", "normal", negate_acute))
    elif rng.random() < 0.3:
        mentioned = {n for n, m in mode.items() if m != "omitted"}
        rest = tuple((n, NEGATIVE) for n in _ACUTE if n not in mentioned)
        if rest:
            out.append(Sentence("Otherwise no acute cardiopulmonary process.", "impression", "normal", rest))
    return out
