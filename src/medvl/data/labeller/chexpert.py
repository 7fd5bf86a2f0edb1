"""A rule-based labeller for the 14 CheXpert observations with negation and uncertainty.

For each sentence the labeller

1. finds observation mentions (longest match wins, so "pleural effusion" beats "effusion",
   "nodular opacity" is a lesion and "pericardial effusion" is nothing);
2. resolves anatomical mentions ("heart size", "cardiomediastinal silhouette") through an
   enlargement or normal-state qualifier within a few words;
3. finds negation and uncertainty triggers (NegEx/ConText style: forward triggers act until
   the next clause terminator; backward triggers act on the nearest mention before them and on
   the mentions listed with it — "effusion or pneumothorax is not seen", "edema, effusion, or
   pneumothorax is not seen" — but not across an unrelated mention: in "small effusion,
   pneumothorax is not seen" only the pneumothorax is negated; pseudo-triggers such as "no
   change" are consumed and do nothing); when both act on a mention, the nearer wins; "A or B"
   (or "A versus B") between two mentions hedges both. Normality phrases after a finding ("… within the limits of
   normal") negate it; limitation phrases ("evaluation for pneumothorax is limited") make it
   uncertain;
4. aggregates mentions: positive (1) beats uncertain (-1) beats negative (0); unmentioned is
   NaN. ``No Finding`` is 1 when no other observation except Support Devices is positive or
   uncertain, else NaN, as in the CheXpert label files.

The same codes as the CheXpert/MIMIC-CXR label CSVs (1, 0, -1, blank) are returned, so the
uncertainty policies of the adapters apply unchanged.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medvl.data.labeller import rules
from medvl.data.labeller.sections import select_text, split_sentences

__all__ = ["MentionResult", "ReportLabeller", "aggregate_codes"]

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
_NO_FINDING = "No Finding"
_WORD = re.compile(r"\w+")


def _alternation(patterns: Iterable[tuple[str, str]]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One regex with a named group per (label, pattern); longer patterns are tried first."""
    items = sorted(patterns, key=lambda item: -len(item[1]))
    names: dict[str, str] = {}
    parts = []
    for index, (label, pattern) in enumerate(items):
        name = f"g{index}"
        names[name] = label
        parts.append(f"(?P<{name}>{pattern})")
    return re.compile(r"(?<![\w/-])(?:" + "|".join(parts) + r")(?![\w/-])", re.IGNORECASE), names


@dataclass(frozen=True)
class _Span:
    label: str
    start: int
    end: int

    def overlaps(self, other: _Span) -> bool:
        return self.start < other.end and other.start < self.end


def _find(regex: re.Pattern[str], names: dict[str, str], text: str) -> list[_Span]:
    spans: list[_Span] = []
    for match in regex.finditer(text):
        group = match.lastgroup
        if group is not None:
            spans.append(_Span(names[group], match.start(), match.end()))
    return spans


def _longest_first(spans: Iterable[_Span]) -> list[_Span]:
    """Drop spans that overlap a longer one; result sorted by start."""
    kept: list[_Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if not any(span.overlaps(k) for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


@dataclass(frozen=True)
class MentionResult:
    """One labelled mention (for inspection and tests)."""

    observation: str
    text: str
    value: float
    trigger: str
    """The trigger text that decided a negative/uncertain value ("" for positive)."""


def aggregate_codes(values: Iterable[float]) -> float:
    """Combine mention codes: any 1 → 1, else any -1 → -1, else any 0 → 0, else NaN."""
    seen = set(values)
    for code in (POSITIVE, UNCERTAIN, NEGATIVE):
        if code in seen:
            return code
    return float("nan")


class ReportLabeller:
    """Labels sentences and reports with the 14 CheXpert observations.

    Args:
        sections: report sections to label (see :func:`select_text`).
        fallback: what to label when none of ``sections`` exists (``last_paragraph`` or ``none``).
        anatomy_window: words after (and half as many before) an anatomical mention in which a
            qualifier ("enlarged", "normal") is looked for.
        global_negations: also read whole-chest normal statements ("no acute cardiopulmonary
            process", "the lungs are clear", "no acute osseous abnormality") as negating the
            acute findings they cover (:data:`rules.GLOBAL_NEGATIONS`). Off by default, matching
            the CheXpert labeller, which leaves such findings unmentioned.
        old_fractures: ``"positive"`` (default, CheXpert's convention): an old, healed or remote
            fracture is a Fracture; ``"ignore"``: such mentions label nothing (acute findings only).
    """

    classes: tuple[str, ...] = rules.CHEXPERT_CLASSES

    def __init__(self, sections: Sequence[str] = ("findings", "impression"),
                 fallback: Literal["last_paragraph", "none"] = "last_paragraph", anatomy_window: int = 6,
                 global_negations: bool = False, old_fractures: Literal["positive", "ignore"] = "positive") -> None:
        if old_fractures not in ("positive", "ignore"):
            raise ValueError(f"old_fractures must be 'positive' or 'ignore', got {old_fractures!r}")
        if anatomy_window < 1:
            raise ValueError(f"anatomy_window must be >= 1, got {anatomy_window}")
        self.sections = tuple(sections)
        self.global_negations = global_negations
        self.old_fractures = old_fractures
        self._global = [(re.compile(r"(?<![\w-])(?:" + p + r")(?![\w-])", re.IGNORECASE), obs)
                        for p, obs in rules.GLOBAL_NEGATIONS.items()]
        self.fallback = fallback
        self.anatomy_window = anatomy_window
        mention_items = [(obs, p) for obs, ps in rules.MENTIONS.items() for p in ps]
        mention_items += [(f"@{obs}", p) for obs, ps in rules.ANATOMY.items() for p in ps]
        mention_items += [("#exclude", p) for p in rules.EXCLUSIONS]
        if old_fractures == "ignore":
            mention_items += [("#exclude", p) for p in rules.OLD_FRACTURES]
        self._mentions, self._mention_names = _alternation(mention_items)
        trigger_items = (
            [("neg_pre", p) for p in rules.NEGATION_PRE]
            + [("neg_post", p) for p in rules.NEGATION_POST]
            + [("unc_pre", p) for p in rules.UNCERTAIN_PRE]
            + [("unc_post", p) for p in rules.UNCERTAIN_POST]
            + [("pseudo", p) for p in rules.PSEUDO]
            + [("term", p) for p in rules.TERMINATORS]
        )
        self._triggers, self._trigger_names = _alternation(trigger_items)
        # the punctuation terminators have no word characters: match them without boundaries
        self._punct = re.compile(r"[;:]")
        state_items = [("pos", p) for p in rules.ENLARGED_WORDS] + [("neg", p) for p in rules.NORMAL_WORDS]
        self._states, self._state_names = _alternation(state_items)
        self._index = {name: i for i, name in enumerate(self.classes)}

    # ------------------------------------------------------------------ sentence level
    def mentions(self, sentence: str) -> list[MentionResult]:
        """Every labelled mention in one sentence, in order."""
        text = sentence.lower()
        mentions = [m for m in _longest_first(_find(self._mentions, self._mention_names, text))]
        if not mentions:
            return self._global_results(text)
        triggers = [t for t in _find(self._triggers, self._trigger_names, text)
                    if not any(t.overlaps(m) for m in mentions)]
        triggers = _longest_first(triggers)
        triggers += [_Span("term", m.start(), m.end()) for m in self._punct.finditer(text)]
        terminators = sorted([t for t in triggers if t.label == "term"], key=lambda s: s.start)
        modifiers = [t for t in triggers if t.label not in ("term", "pseudo")]
        labelled = [m for m in mentions if m.label != "#exclude"]
        results: list[MentionResult] = []
        for position, mention in enumerate(labelled):
            observation = mention.label
            span = mention
            if observation.startswith("@"):
                observation = observation[1:]
                state, qualifier_end = self._anatomy_state(text, mention)
                if state is None:
                    continue
                mention_text = text[mention.start:mention.end]
                if state == NEGATIVE:
                    results.append(MentionResult(observation, mention_text, NEGATIVE, "normal"))
                    if "cardio" in mention_text:
                        results.extend(MentionResult(o, mention_text, NEGATIVE, "normal")
                                       for o in rules.NORMAL_ALSO_NEGATES.get(observation, ()))
                    continue
                # hedges and negations between the structure and its qualifier apply to it
                span = _Span(mention.label, mention.start, max(mention.end, qualifier_end))
            value, trigger = self._modifier_value(text, span, modifiers, terminators,
                                                  self._intervening(text, labelled, position))
            if value == POSITIVE and self._hedged_by_or(text, labelled, position):
                value, trigger = UNCERTAIN, "or"
            results.append(MentionResult(observation, text[mention.start:mention.end], value, trigger))
        return results

    def _global_results(self, text: str) -> list[MentionResult]:
        if not self.global_negations:
            return []
        out: list[MentionResult] = []
        for regex, observations in self._global:
            for match in regex.finditer(text):
                out.extend(MentionResult(o, match.group(0), NEGATIVE, "global") for o in observations)
        return out

    def _anatomy_state(self, text: str, mention: _Span) -> tuple[float | None, int]:
        """State of an anatomical mention (1 enlarged, 0 normal, None) and where its qualifier ends."""
        words_after = [m for m in _WORD.finditer(text, mention.end)][: self.anatomy_window]
        words_before = [m for m in _WORD.finditer(text, 0, mention.start)][-(self.anatomy_window // 2):]
        lo = words_before[0].start() if words_before else mention.start
        hi = words_after[-1].end() if words_after else mention.end
        window = text[lo:mention.start] + " " * (mention.end - mention.start) + text[mention.end:hi]
        for stop in self._punct.finditer(window):  # a qualifier after ';' belongs to another clause
            if stop.start() > mention.start - lo:
                window = window[: stop.start()]
                break
        states = _longest_first(_find(self._states, self._state_names, window))
        for label, value in (("pos", POSITIVE), ("neg", NEGATIVE)):
            hits = [s for s in states if s.label == label]
            if hits:
                return value, lo + max(s.end for s in hits)
        return None, mention.end

    @staticmethod
    def _intervening(text: str, mentions: list[_Span], position: int) -> int | None:
        """Start of the first later mention that is *not* listed with mention ``position`` (a backward
        trigger beyond it belongs to that mention, not to this one), or None.

        Mentions form a list when every gap between them is a comma or a short conjunction
        (and/or/nor, ≤ 3 words) and the last gap is a conjunction: "A, B, or C is not seen".
        """
        later = mentions[position + 1:]
        if not later:
            return None
        chain = [mentions[position], *later]
        gaps = [text[a.end:b.start] for a, b in itertools.pairwise(chain)]

        def conjunction(gap: str) -> bool:
            words = _WORD.findall(gap)
            return bool({"and", "or", "nor"} & set(words)) and len(words) <= 3

        def comma(gap: str) -> bool:
            return not _WORD.findall(gap) and "," in gap

        # walk forward while gaps are list separators; the list is real once a conjunction closes it
        listed_until = 0
        for i, gap in enumerate(gaps):
            if conjunction(gap):
                listed_until = i + 1
            elif not comma(gap):
                break
        if listed_until >= len(later):
            return None
        return later[listed_until].start

    @staticmethod
    def _modifier_value(text: str, mention: _Span, modifiers: list[_Span],
                        terminators: list[_Span], intervening: int | None = None) -> tuple[float, str]:
        best: tuple[int, float, str] | None = None
        for trigger in modifiers:
            if trigger.label.endswith("_pre"):
                if mention.start <= trigger.start and trigger.end <= mention.end:
                    distance = 0  # inside an anatomical mention ("heart is possibly enlarged")
                    value = NEGATIVE if trigger.label.startswith("neg") else UNCERTAIN
                    if best is None or distance < best[0]:
                        best = (distance, value, text[trigger.start:trigger.end])
                    continue
                if trigger.end > mention.start:
                    continue
                if any(trigger.end <= t.start and t.end <= mention.start for t in terminators):
                    continue
                distance = mention.start - trigger.end
            else:
                if trigger.start < mention.end:
                    continue
                if any(mention.end <= t.start and t.end <= trigger.start for t in terminators):
                    continue
                if intervening is not None and intervening < trigger.start:
                    continue  # the trigger speaks about a later, unrelated mention
                distance = trigger.start - mention.end
            value = NEGATIVE if trigger.label.startswith("neg") else UNCERTAIN
            if best is None or distance < best[0]:
                best = (distance, value, text[trigger.start:trigger.end])
        if best is None:
            return POSITIVE, ""
        return best[1], best[2]

    @staticmethod
    def _hedged_by_or(text: str, mentions: list[_Span], position: int) -> bool:
        for neighbour in (position - 1, position + 1):
            if 0 <= neighbour < len(mentions):
                a, b = sorted((mentions[position], mentions[neighbour]), key=lambda s: s.start)
                between = _WORD.findall(text[a.end:b.start])
                if {"or", "versus", "vs"} & set(between) and len(between) <= 3 and "either" not in between:
                    return True
        return False

    def label_sentence(self, sentence: str) -> dict[str, float]:
        """Codes of the observations mentioned in one sentence (no ``No Finding``)."""
        codes: dict[str, list[float]] = {}
        results = self.mentions(sentence)
        if results and self.global_negations:
            results += self._global_results(sentence.lower())
        for result in results:
            codes.setdefault(result.observation, []).append(result.value)
        return {obs: aggregate_codes(values) for obs, values in codes.items()}

    # ------------------------------------------------------------------ text / report level
    def sentence_vector(self, sentence: str) -> np.ndarray:
        """Codes (14,) for one sentence, with ``No Finding`` derived as for a report."""
        return self._vector([self.label_sentence(sentence)])

    def label_text(self, text: str) -> np.ndarray:
        """Codes (14,) for free text (all of it, split into sentences)."""
        return self._vector([self.label_sentence(s) for s in split_sentences(text)])

    def label_report(self, report: str) -> np.ndarray:
        """Codes (14,) for a full report, using only the configured sections."""
        parts = select_text(report, self.sections, self.fallback)
        return self._vector([self.label_sentence(s) for _, text in parts for s in split_sentences(text)])

    def label_reports(self, reports: Iterable[str], sections: bool = True) -> np.ndarray:
        """Codes (N, 14) for many reports (``sections=False``: label the whole text)."""
        rows = [self.label_report(r) if sections else self.label_text(r) for r in reports]
        return np.stack(rows) if rows else np.zeros((0, len(self.classes)))

    def _vector(self, per_sentence: Sequence[dict[str, float]]) -> np.ndarray:
        out = np.full(len(self.classes), np.nan)
        merged: dict[str, list[float]] = {}
        for codes in per_sentence:
            for obs, value in codes.items():
                merged.setdefault(obs, []).append(value)
        for obs, values in merged.items():
            if obs in self._index:
                out[self._index[obs]] = aggregate_codes(values)
        if _NO_FINDING in self._index:
            findings = [i for name, i in self._index.items() if name not in (_NO_FINDING, "Support Devices")]
            if not np.isin(out[findings], (POSITIVE, UNCERTAIN)).any():
                out[self._index[_NO_FINDING]] = POSITIVE
        return out
