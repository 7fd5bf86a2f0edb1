"""Radiology report structure: section extraction and sentence splitting.

Reports such as MIMIC-CXR's free-text files look like::

    FINAL REPORT
    EXAMINATION:  CHEST (PA AND LAT)
    INDICATION:  ...
    FINDINGS:
     The lungs are clear.  Heart size is normal.
    IMPRESSION:
     No acute cardiopulmonary process.

:func:`extract_sections` finds headers (an upper-case or known name at the start of a line,
followed by a colon), :func:`select_text` returns the wanted sections (FINDINGS and IMPRESSION by
default, with the last paragraph as an optional fallback, as MIMIC-CXR's own section script
does), and :func:`split_sentences` splits text into sentences without breaking decimals
("1.5 cm"), abbreviations ("approx.", "Dr.") or enumerations ("1. ... 2. ...").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

__all__ = ["SECTION_ALIASES", "extract_sections", "select_text", "split_sentences"]

#: Header spellings mapped to canonical section names.
SECTION_ALIASES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "findings_impression",
    "impression and findings": "findings_impression",
    "findings/impression": "findings_impression",
    "indication": "indication",
    "indications": "indication",
    "history": "history",
    "clinical history": "history",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
    "notification": "notification",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "wet read": "wet_read",
    "addendum": "addendum",
}

_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z /&()-]{1,40}?)[ \t]*:", re.MULTILINE)


def _canonical(header: str) -> str | None:
    key = re.sub(r"\s+", " ", header.strip().lower())
    if key in SECTION_ALIASES:
        return SECTION_ALIASES[key]
    if header.strip().isupper() and len(key) > 2:
        return key.replace(" ", "_")
    return None


def extract_sections(report: str) -> list[tuple[str, str]]:
    """``[(section, text), …]`` in report order; text before the first header is ``preamble``.

    A header is a known section name (any case) or an all-capitals word group at the start of a
    line followed by ``:``. Text is whitespace-normalised; sections may be empty strings.
    """
    sections: list[tuple[str, str]] = []
    position, name = 0, "preamble"
    for match in _HEADER.finditer(report):
        canonical = _canonical(match.group(1))
        if canonical is None:
            continue
        sections.append((name, _squash(report[position:match.start()])))
        name, position = canonical, match.end()
    sections.append((name, _squash(report[position:])))
    if sections and sections[0][0] == "preamble" and not sections[0][1]:
        sections = sections[1:]
    return sections


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def select_text(report: str, sections: Sequence[str] = ("findings", "impression"),
                fallback: Literal["last_paragraph", "none"] = "last_paragraph") -> list[tuple[str, str]]:
    """The wanted sections' ``(name, text)`` pairs (empty ones dropped), in report order.

    A combined ``FINDINGS AND IMPRESSION`` section counts as both. With
    ``fallback="last_paragraph"`` a report with none of the wanted section headers yields its
    last non-empty paragraph (named ``last_paragraph``), provided it is not another known
    section; wanted sections that are present but empty yield nothing.
    """
    wanted = set(sections)
    present = [(name, text) for name, text in extract_sections(report)
               if name in wanted or (name == "findings_impression" and wanted & {"findings", "impression"})]
    if present or fallback == "none":  # a wanted section that exists but is empty yields nothing
        return [(name, text) for name, text in present if text]
    paragraphs = [p for p in re.split(r"\n\s*\n", report) if p.strip()]
    if not paragraphs:
        return []
    last = paragraphs[-1]
    header = _HEADER.match(last)
    if header is not None and _canonical(header.group(1)) not in (None, *wanted):
        return []
    return [("last_paragraph", _squash(last))]


_ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "approx", "vs", "e.g", "i.e", "etc", "fig", "st", "cm", "mm",
    "a.m", "p.m", "am", "pm", "pt", "pts", "dept", "rt", "lt", "incl", "resp", "ant", "post", "lat",
})
_BOUNDARY = re.compile(r"([.?!])\s+")
_ENUMERATOR = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*•])\s+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (stripped, non-empty, enumerators like ``1.`` removed).

    A boundary is ``.``, ``?`` or ``!`` followed by whitespace, unless the period ends a known
    abbreviation, a single letter (an initial) or a bare list number; newlines separating
    enumerated items also end a sentence.
    """
    pieces: list[str] = []
    for line in re.split(r"\n(?=\s*(?:\d{1,2}[.)]|[-*•])\s)", text):
        pieces.extend(_split_line(_squash(line)))
    out = []
    for piece in pieces:
        piece = _ENUMERATOR.sub("", piece).strip()
        if piece and re.search(r"[A-Za-z]", piece):
            out.append(piece)
    return out


def _split_line(text: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.end(1)
        candidate = text[start:end]
        if match.group(1) == ".":
            word = re.search(r"([A-Za-z.]+|\d+)\.$", candidate)
            token = word.group(1).lower() if word else ""
            if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                continue
            if token.isdigit() and candidate.strip() == f"{token}.":  # "1." list number at the start
                continue
        sentences.append(candidate.strip())
        start = match.end()
    if start < len(text):
        sentences.append(text[start:].strip())
    return [s for s in sentences if s]
