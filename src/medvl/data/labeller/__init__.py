"""Rule-based report labelling: sections, sentences and the 14 CheXpert observations."""

from medvl.data.labeller.chexpert import MentionResult, ReportLabeller, aggregate_codes
from medvl.data.labeller.rules import CHEXPERT_CLASSES
from medvl.data.labeller.sections import extract_sections, select_text, split_sentences

__all__ = [
    "CHEXPERT_CLASSES",
    "MentionResult",
    "ReportLabeller",
    "aggregate_codes",
    "extract_sections",
    "select_text",
    "split_sentences",
]
