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
    "LIMITATION_POST",
    "LIMITATION_PRE",
    "MENTIONS",
    "NEGATION_POST",
    "NEGATION_PRE",
    "NORMAL_ALSO_NEGATES",
    "NORMAL_POST",
    "NORMAL_WORDS",
    "OLD_FRACTURES",
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
    # CheXpert's convention (its device vocabulary: tube, line(s), catheter, picc, pacer/pacemaker, icd,
    # defibrillator, valve, hardware, arthroplasty, plate, screw, cannula, coil, drain, port, device):
    # lines, tubes, catheters, drains, cardiac devices and their leads, stents, prosthetic valves,
    # sternotomy and pacing wires, orthopaedic hardware, coils, filters. Not devices: surgical clips
    # (CheXpert lists none; recognised and deliberately left unlabelled, see EXCLUSIONS) and
    # radiopaque skin/nipple markers.
    "Support Devices": (
        r"endotracheal tube", r"et tube", r"ett", r"(?:naso|oro)gastric tube", r"ng tube", r"og tube",
        r"enteric tube", r"feeding tube", r"dobhoff(?: tube)?", r"chest tubes?", r"pigtail catheter",
        r"(?:(?:gastrostomy|jejunostomy|peg|g|j|nasoenteric|nasojejunal|thoracostomy|pleural|mediastinal|"
        r"drainage|trach|nasal) )?tubes?", r"tubing",
        r"(?:central venous |central |venous |pulmonary artery |swan[- ]ganz |dialysis |tunnell?ed |hickman )?catheters?",
        r"(?:(?:right|left) )?(?:internal jugular|ij|subclavian|femoral|jugular|arterial|hickman|dialysis|midline|"
        r"(?:triple|double|single)[- ]lumen|tunnell?ed|venous|central(?: venous)?|picc|pa|pulmonary artery|"
        r"swan[- ]ganz|introducer|cordis) (?:venous |central |catheter |access )?lines?",
        r"lines", r"picc(?: line)?", r"port[- ]a[- ]cath", r"mediport", r"(?:chest |infusion |power )?port",
        r"pacemaker", r"pacer", r"(?:aicd|icd|crt-?d|crt-?p)", r"defibrillator", r"loop recorder",
        r"(?:pacer|pacemaker|cardiac|pacing|icd|aicd|defibrillator|transvenous|monitoring|ecg|ekg|telemetry|"
        r"epicardial|(?:right |left )?(?:atrial|ventricular)|biventricular|coronary sinus) (?:leads?|wires?|electrodes?)",
        r"electrodes?", r"(?:single|dual|two|three)[- ](?:chamber|lead) (?:pacemaker|pacer|device|icd|aicd)",
        r"tracheostomy(?: tube)?", r"stents?", r"stent[- ]grafts?", r"endografts?", r"drains?", r"lvad", r"impella",
        r"intra-?aortic balloon pump", r"iabp", r"ecmo(?: cannulae?| cannulas)?", r"cannulae?", r"cannulas",
        r"support devices?", r"lines and tubes", r"tubes and lines", r"(?:monitoring |cardiac |closure |"
        r"implanted |implantable |occluder |assist )?devices?", r"hardware",
        r"(?:median )?sternotomy wires?", r"sternal (?:wires?|sutures?)", r"(?:guide ?|pacing |cerclage |surgical )?wires?",
        r"(?:prosthetic|mechanical|bioprosthetic) (?:valves?|mitral valve|aortic valve|tricuspid valve)",
        r"valve (?:replacement|prosthesis)", r"(?:tavr|tavi|mitraclip|watchman)", r"annuloplasty ring",
        r"(?:embolization |endovascular )?coils", r"ivc filter",
        r"(?:vp|ventriculoperitoneal|ventriculoatrial|va) shunt(?: catheter| tubing)?", r"shunt (?:catheter|tubing)",
        r"screws?", r"(?:fixation|surgical|orthopa?edic|metallic|compression|sternal) plates?",
        r"(?:harrington|spinal|fixation|fusion|intramedullary) rods?", r"arthroplast(?:y|ies)",
        r"(?:spinal )?fusion hardware", r"(?:shoulder|hip|humeral) prosthes(?:is|es)",
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

_NON_LUNG_SITES = (
    r"bony|bone|osseous|lytic|sclerotic|blastic|skeletal|vertebral|spinal|rib|sternal|clavicular|humeral|"
    r"skin|cutaneous|subcutaneous|soft[- ]tissue|breast|thyroid|liver|hepatic|renal|kidney|adrenal|splenic|"
    r"pancreatic|abdominal|axillary|neck|chest wall|esophageal|gastric|cardiac|pericardial"
)
_NON_LUNG_ORGANS = (
    r"bones?|ribs?|spine|vertebra(?:e|l body)?|sternum|clavicles?|humer(?:us|i)|scapulae?|skin|breasts?|thyroid|"
    r"liver|kidneys?|adrenals?|adrenal glands?|spleen|pancreas|abdomen|upper abdomen|axillae?|neck|chest wall|"
    r"soft tissues?"
)

#: Phrases that contain a mention word but are not the observation (consumed, label nothing).
EXCLUSIONS: tuple[str, ...] = (
    r"pericardial effusions?", r"joint effusions?", r"soft tissue (?:o?edema|densit(?:y|ies)|opacit(?:y|ies))",
    r"bone densit(?:y|ies)", r"breast (?:tissue )?densit(?:y|ies)", r"nipple shadows?",
    r"skin folds?", r"overlying (?:soft tissue|artifact)", r"heart failure clinic",
    # surgical clips and staples: not a Support Device (CheXpert's device vocabulary has no clip)
    r"(?:surgical |vascular |cholecystectomy |aneurysm |hemostatic |embolization |metallic |skin )?(?:clips?|staples)",
    # lesions outside the lung are not CheXpert's Lung Lesion (bone, skin, breast, abdominal organs, …)
    rf"(?:{_NON_LUNG_SITES}) (?:\w+ ){{0,2}}?(?:lesions?|mass(?:es)?|nodules?|metastas(?:is|es)|tumou?rs?)",
    rf"(?:lesions?|mass(?:es)?|nodules?|metastas(?:is|es)|tumou?rs?) (?:in|of|within|involving|at|to) (?:the )?"
    rf"(?:\w+ ){{0,3}}?(?:{_NON_LUNG_ORGANS})",
    # calcified nodules / granulomas are old granulomatous disease, not a lesion (CheXpert's "unmention")
    r"calcified (?:\w+ ){0,2}?(?:nodules?|granulomas?)", r"granulomas?",
    # lines that are anatomy or signs, not catheters
    r"(?:visceral )?pleural lines?", r"septal lines?", r"(?:azygo-?esophageal|paratracheal|paraspinal|fissural?) "
    r"(?:lines?|stripes?)", r"lines? of (?:sight|the)", r"skin (?:lines?|markers?)", r"nipple markers?",
    r"(?:radiopaque |skin )?markers?", r"tubular (?:lucenc(?:y|ies)|opacit(?:y|ies))", r"vascular (?:lines?|markings)",
)

#: Old / healed / remote fractures: labelled Fracture positive by default (CheXpert's convention, whose
#: fracture phrase has no age qualifier), left out with ``ReportLabeller(old_fractures="ignore")``.
OLD_FRACTURES: tuple[str, ...] = (
    r"(?:old|remote|chronic|prior)(?: healed| healing)? (?:\w+ ){0,3}fractures?(?: deformit(?:y|ies))?",
    r"healed (?:\w+ ){0,3}fractures?(?: deformit(?:y|ies))?", r"fractures? (?:\w+ ){0,3}(?:(?:is|are|appears?) )?(?:old|healed|remote)",
)

#: Negation triggers that act forwards over the rest of the clause.
NEGATION_PRE: tuple[str, ...] = (
    r"no evidence (?:of|for)", r"no signs? of", r"no (?:radiographic )?findings? (?:of|to suggest)", r"no",
    r"not", r"without(?: evidence of)?", r"negative for", r"free of", r"clear of", r"absence of",
    r"resolution of", r"resolved", r"removal of", r"interval removal of", r"rules? out", r"ruled out",
    r"none", r"neither", r"nor", r"never", r"lack of", r"no longer", r"has been removed",
)
#: Normality phrases after a finding: they state it is within normal limits, so they negate it
#: (like "is not seen"), e.g. "mild vascular engorgement, within the limits of normal" → Edema 0.
NORMAL_POST: tuple[str, ...] = (
    r"(?:(?:is|are|was|were|remains?) )?(?:within|at|in) (?:the )?(?:upper |high )?(?:limits? of normal|"
    r"normal (?:limits|range))",
    r"(?:(?:is|are|was|were|remains?) )?(?:top|upper)[- ]normal(?: in size)?",
    r"(?:is|are|was|were|remains?) (?:otherwise )?(?:normal|unremarkable)",
)

#: Negation triggers that act backwards over the clause before them.
NEGATION_POST: tuple[str, ...] = (
    r"(?:is|are|was|were) not (?:seen|identified|present|appreciated|visualized|evident|demonstrated)",
    r"not (?:seen|identified|present|appreciated|visualized|evident|demonstrated)", r"(?:is|are|was|were|has|have) absent",
    r"absent", r"(?:has|have) resolved", r"resolved", r"(?:has|have) (?:been )?removed", r"removed",
    r"(?:is|are|was|were|has been|have been) excluded", r"(?:is|are) negative", r"no longer (?:seen|present|visualized|evident)",
    r"(?:has|have) cleared", r"(?:is|are) gone",
    # normality statements scoping back over a finding: "vascular engorgement … within the limits of normal"
    *NORMAL_POST,
)
#: Limitation phrases: the report says a finding could not be (fully) assessed. Convention: such a
#: finding is **uncertain** (-1), as "cannot be excluded" is, never positive (the report does not
#: assert it) nor negative (it does not rule it out). Forward ones first, then backward ones.
LIMITATION_PRE: tuple[str, ...] = (
    r"limited (?:evaluation|assessment|visuali[sz]ation|examination|sensitivity) (?:of|for)",
    r"difficult to (?:assess|evaluate|see)(?: for)?", r"(?:insensitive|less sensitive) for",
    r"(?:cannot|can ?not|could not|unable to) (?:be )?(?:assess(?:ed)?|evaluat(?:e|ed)) (?:for )?",
)
LIMITATION_POST: tuple[str, ...] = (
    r"(?:is|are|was|were|remains?) (?:somewhat |slightly |markedly |severely |therefore )?limited",
    r"(?:is|are|was|were) (?:not|poorly|incompletely|suboptimally) (?:well |fully )?(?:assessed|evaluated|visuali[sz]ed)",
    r"not (?:well |fully )?(?:assessed|evaluated|visuali[sz]ed)", r"(?:is|are) not well seen",
    r"(?:cannot|can ?not|could not) be (?:assessed|evaluated)",
    r"(?:is|are|would be|will be|may be) (?:difficult|hard) to (?:assess|evaluate|see)",
    r"(?:is|are|may be) obscured", r"(?:is|are) not excluded on this (?:\w+ ){0,2}(?:study|exam|radiograph|film)",
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
    r"evaluate for", r"assess for", r"r/o", *LIMITATION_PRE,
)
#: Uncertainty triggers that act backwards.
UNCERTAIN_POST: tuple[str, ...] = (
    r"(?:cannot|can ?not|could not|can't) (?:be )?(?:entirely |completely |totally )?(?:excluded|ruled out)",
    r"(?:is|are) not (?:entirely |completely )?(?:excluded|ruled out)", r"not (?:excluded|ruled out)",
    r"(?:is|are) (?:possible|suspected|questioned|likely|probable|not excluded)", r"(?:is|are) (?:a )?consideration",
    r"versus", r"vs\.?", r"(?:is|are) difficult to exclude", r"(?:is|are) in the differential", *LIMITATION_POST,
)
#: Pseudo-triggers: contain a trigger word but neither negate nor hedge the finding.
PSEUDO: tuple[str, ...] = (
    r"no (?:significant |substantial |appreciable |interval |definite interval |major )?change(?:s|d)?(?: in)?",
    r"not (?:significantly |substantially )?changed", r"without (?:significant |interval )?change", r"not only",
    r"no increase(?:d)?(?: in)?", r"no decrease(?:d)?(?: in)?", r"no further",
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
