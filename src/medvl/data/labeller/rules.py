"""The rule vocabulary of the CheXpert-14 report labeller (data, not logic).

Three kinds of phrases, matched case-insensitively on word boundaries:

* **mentions** of each observation: either *direct* (the phrase names the finding:
  "pleural effusion", "cardiomegaly") or *anatomical* (the phrase names a structure whose
  state decides the finding: "heart size", "cardiomediastinal silhouette"; these need an
  enlargement or a normal-state qualifier in the same clause);
* **modifiers** in the NegEx/ConText tradition: negation and uncertainty triggers that act
  forwards (``pre``: "no", "possible") or backwards (``post``: "is not seen", "cannot be
  excluded"), pseudo-triggers that contain a trigger word but do not negate ("no change",
  "not only"), and clause terminators that end a trigger's scope ("but", "however", ";");
* **exclusions**: phrases that contain a mention word but are not that finding
  ("pericardial effusion", "rule out"), matched as mentions of nothing.

Lists are written for chest radiograph reports in English; they are my own wording of common
radiology vocabulary (not copied from the CheXpert or NegBio pattern files).
"""

from __future__ import annotations

__all__ = [
    "ANATOMY",
    "CHEXPERT_CLASSES",
    "ENLARGED_WORDS",
    "EXCLUSIONS",
    "GLOBAL_NEGATIONS",
    "MENTIONS",
    "NEGATION_POST",
    "NEGATION_PRE",
    "NORMAL_ALSO_NEGATES",
    "NORMAL_WORDS",
    "PSEUDO",
    "TERMINATORS",
    "UNCERTAIN_POST",
    "UNCERTAIN_PRE",
]

#: The 14 CheXpert observations, in the column order of the CheXpert / MIMIC-CXR label CSVs.
CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: Direct mention phrases per observation (regex fragments; ``s?`` etc. allowed).
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"widen(?:ed|ing) (?:of the )?(?:superior )?mediastin(?:um|al (?:silhouette|contours?))",
        r"mediastinal widening", r"mediastinal enlargement", r"enlarged (?:cardio)?mediastin(?:um|al (?:silhouette|contours?))",
        r"enlargement of the (?:cardio)?mediastin(?:um|al silhouette)", r"cardiomediastinal enlargement",
        r"widened mediastinum", r"mediastinal (?:mass|prominence)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly", r"enlarged heart", r"cardiac enlargement", r"enlarged cardiac (?:silhouette|contours?|size)",
        r"enlargement of the (?:cardiac silhouette|heart)", r"large heart", r"heart enlargement",
    ),
    "Lung Opacity": (
        r"opacit(?:y|ies)", r"opacification", r"opacified", r"infiltrat(?:e|es|ion)", r"air ?space (?:disease|process|opacit(?:y|ies))",
        r"ground[- ]glass", r"haziness", r"hazy", r"densit(?:y|ies)", r"reticular (?:pattern|markings|changes)",
        r"interstitial (?:markings|abnormalit(?:y|ies)|pattern|disease|opacit(?:y|ies))", r"scarring",
    ),
    "Lung Lesion": (
        r"mass(?:es)?", r"nodules?", r"nodular (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?)", r"lesions?",
        r"neoplasms?", r"tumou?rs?", r"carcinoma", r"malignancy", r"metastas(?:is|es)", r"cavitary lesions?",
        r"cavitation", r"lung lesions?", r"pulmonary lesions?",
    ),
    "Edema": (
        r"o?edema", r"vascular congestion", r"pulmonary congestion", r"venous congestion", r"congestive heart failure",
        r"chf", r"heart failure", r"fluid overload", r"vascular engorgement", r"cephalization", r"kerley b lines",
    ),
    "Consolidation": (r"consolidat(?:ion|ions|ive|ed)",),
    "Pneumonia": (
        r"pneumonias?", r"bronchopneumonia", r"infections?", r"infectious (?:process|etiology)", r"aspiration",
        r"pneumonitis",
    ),
    "Atelectasis": (
        r"atelectas(?:is|es)", r"atelectatic", r"(?:lobar|lung|segmental|subsegmental|lobes?) collapse",
        r"collapsed? (?:of the )?(?:left |right )?(?:upper |middle |lower )?lobe", r"volume loss",
    ),
    "Pneumothorax": (r"pneumothora(?:x|ces)", r"hydropneumothorax", r"pneumothoraxes"),
    "Pleural Effusion": (
        r"pleural effusions?", r"effusions?", r"pleural fluid", r"hydrothorax", r"hemothorax",
    ),
    "Pleural Other": (
        r"pleural thickening", r"pleural plaques?", r"fibrothorax", r"pleural scarring", r"pleural calcifications?",
        r"pleural reaction",
    ),
    "Fracture": (r"fractures?", r"fractured", r"fx"),
    "Support Devices": (
        r"endotracheal tube", r"et tube", r"ett", r"(?:naso|oro)gastric tube", r"ng tube", r"og tube",
        r"enteric tube", r"feeding tube", r"dobhoff(?: tube)?", r"chest tubes?", r"pigtail catheter",
        r"(?:central venous |central |venous |pulmonary artery |swan[- ]ganz |dialysis )?catheters?",
        r"central (?:venous )?lines?", r"picc(?: line)?", r"port[- ]a[- ]cath", r"(?:chest |infusion )?port",
        r"pacemaker", r"pacer", r"(?:aicd|icd)", r"defibrillator", r"(?:pacer|pacemaker|cardiac|pacing|icd|aicd|transvenous|monitoring|ecg|ekg|telemetry) leads?",
        r"tracheostomy(?: tube)?", r"stents?", r"drains?", r"lvad", r"intra-?aortic balloon pump", r"iabp",
        r"support devices?", r"lines and tubes", r"tubes and lines", r"monitoring devices?", r"sternotomy wires",
        r"(?:prosthetic|mechanical) (?:valve|mitral valve|aortic valve)", r"valve replacement",
    ),
}

#: Anatomical mentions: structure phrase → observation (needs an enlarged/normal qualifier).
ANATOMY: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        r"heart size", r"heart", r"cardiac silhouette", r"cardiac size", r"size of the heart",
        r"cardiac contours?", r"cardiac shadow",
    ),
    "Enlarged Cardiomediastinum": (
        r"cardiomediastinal (?:silhouette|contours?|size)", r"mediastinal (?:silhouette|contours?)",
        r"mediastinum", r"cardiomediastinum", r"hilar and mediastinal contours", r"mediastinal and hilar contours",
    ),
}

#: Qualifiers that make an anatomical mention positive ...
ENLARGED_WORDS: tuple[str, ...] = (
    r"enlarged", r"enlargement", r"increased", r"large", r"widened", r"widening", r"prominent", r"big",
    r"top(?:-| )normal to (?:mildly )?enlarged",
)
#: ... or negative.
NORMAL_WORDS: tuple[str, ...] = (
    r"normal", r"within normal limits", r"unremarkable", r"not enlarged", r"normal in size", r"upper limits of normal",
    r"top(?:-| )normal", r"normal size",
)

#: Phrases that contain a mention word but are not the observation (consumed, label nothing).
EXCLUSIONS: tuple[str, ...] = (
    r"pericardial effusions?", r"joint effusions?", r"soft tissue (?:o?edema|densit(?:y|ies)|opacit(?:y|ies))",
    r"bone densit(?:y|ies)", r"breast (?:tissue )?densit(?:y|ies)", r"nipple shadows?",
    r"(?:old|remote)(?: healed)? (?:\w+ ){0,3}fractures?(?: deformit(?:y|ies))?", r"healed (?:\w+ ){0,3}fractures?",
    r"clips?", r"skin folds?", r"overlying (?:soft tissue|artifact)", r"heart failure clinic",
)

#: Negation triggers that act forwards over the rest of the clause.
NEGATION_PRE: tuple[str, ...] = (
    r"no evidence (?:of|for)", r"no signs? of", r"no (?:radiographic )?findings? (?:of|to suggest)", r"no",
    r"not", r"without(?: evidence of)?", r"negative for", r"free of", r"clear of", r"absence of",
    r"resolution of", r"resolved", r"removal of", r"interval removal of", r"rules? out", r"ruled out",
    r"none", r"neither", r"nor", r"never", r"lack of", r"no longer", r"has been removed",
)
#: Negation triggers that act backwards over the clause before them.
NEGATION_POST: tuple[str, ...] = (
    r"(?:is|are|was|were) not (?:seen|identified|present|appreciated|visualized|evident|demonstrated)",
    r"not (?:seen|identified|present|appreciated|visualized|evident|demonstrated)", r"(?:is|are|was|were|has|have) absent",
    r"absent", r"(?:has|have) resolved", r"resolved", r"(?:has|have) (?:been )?removed", r"removed",
    r"(?:is|are|was|were|has been|have been) excluded", r"(?:is|are) negative", r"no longer (?:seen|present|visualized|evident)",
    r"(?:has|have) cleared", r"(?:is|are) gone",
)
#: Uncertainty triggers that act forwards.
UNCERTAIN_PRE: tuple[str, ...] = (
    r"may represent", r"may reflect", r"may be", r"may", r"might", r"could represent", r"could be", r"could",
    r"possible", r"possibly", r"probable", r"probably", r"likely", r"suggest(?:s|ive of|ing)?", r"concern(?:ing)? for",
    r"suspicious for", r"suspect(?:ed)?", r"question(?:able)?(?: of)?", r"equivocal", r"borderline",
    r"cannot (?:be )?(?:excluded|exclude|ruled out|rule out)", r"can ?not (?:be )?(?:excluded|exclude|ruled out|rule out)",
    r"not (?:be )?(?:excluded|ruled out)", r"difficult to (?:exclude|rule out)", r"differential (?:diagnosis )?(?:includes?|of)",
    r"versus", r"vs\.?", r"presum(?:ed|ably)", r"indeterminate", r"uncertain", r"not definitely", r"raises? the possibility of",
    r"potential(?:ly)?", r"cannot be entirely excluded", r"would be difficult to exclude", r"correlate for",
    r"evaluate for", r"assess for", r"r/o",
)
#: Uncertainty triggers that act backwards.
UNCERTAIN_POST: tuple[str, ...] = (
    r"(?:cannot|can ?not|could not|can't) (?:be )?(?:entirely |completely |totally )?(?:excluded|ruled out)",
    r"(?:is|are) not (?:entirely |completely )?(?:excluded|ruled out)", r"not (?:excluded|ruled out)",
    r"(?:is|are) (?:possible|suspected|questioned|likely|probable|not excluded)", r"(?:is|are) (?:a )?consideration",
    r"versus", r"vs\.?", r"(?:is|are) difficult to exclude", r"(?:is|are) in the differential",
)
#: Pseudo-triggers: contain a trigger word but neither negate nor hedge the finding.
PSEUDO: tuple[str, ...] = (
    r"no (?:significant |substantial |appreciable |interval |definite interval |major )?change(?:s|d)?(?: in)?",
    r"not (?:significantly |substantially )?changed", r"without (?:significant |interval )?change", r"not only",
    r"no increase(?:d)?(?: in)?", r"no decrease(?:d)?(?: in)?", r"no further", r"not (?:well )?(?:assessed|evaluated)",
    r"gram[- ]negative", r"not necessarily", r"no interval (?:increase|decrease|worsening|improvement)",
    r"without (?:interval )?worsening", r"no worsening(?: of)?", r"not worse", r"unchanged",
    r"not been (?:significantly )?changed", r"no significant interval",
)
#: Clause terminators: end the scope of a trigger.
TERMINATORS: tuple[str, ...] = (
    r"but", r"however", r"although", r"though", r"except(?: for)?", r"aside from", r"apart from", r"which",
    r"whereas", r"while", r"yet", r"otherwise", r"there (?:is|are|has been|have been)", r"and (?:the|there|a|an)",
    r"with (?:the )?exception of", r"other than", r"[;:]", r"\bas well as\b(?= (?:a|an|the)\b)",
)

#: Whole-chest normal statements and the observations they negate (used only with
#: ``ReportLabeller(global_negations=True)``; the CheXpert labeller leaves these unmentioned).
_ACUTE_LUNG = ("Lung Opacity", "Edema", "Consolidation", "Pneumonia", "Pneumothorax", "Pleural Effusion")
GLOBAL_NEGATIONS: dict[str, tuple[str, ...]] = {
    r"no acute (?:cardiopulmonary|intrathoracic|cardiothoracic|chest) (?:process|abnormalit(?:y|ies)|findings?|disease)": _ACUTE_LUNG,
    r"(?:the )?lungs are (?:well[- ]expanded and |otherwise )?clear|clear lungs": ("Lung Opacity", "Edema", "Consolidation", "Pneumonia"),
    r"no acute (?:osseous|bony|skeletal) (?:abnormalit(?:y|ies)|findings?|injury|process)": ("Fracture",),
}
#: An anatomical mention of these structures stated normal also negates the listed observations.
NORMAL_ALSO_NEGATES: dict[str, tuple[str, ...]] = {"Enlarged Cardiomediastinum": ("Cardiomegaly",)}
