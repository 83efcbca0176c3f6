"""Which tier a question needs: rules first, then the nearest labelled exemplars.

Rules are cheap and explainable: code and stack traces go to ``code``; step-by-step
reasoning, proofs, analysis, architecture, debugging and comparisons, or a very long
question, go to ``hard``. Otherwise the question's embedding (the one the cache lookup
already computed: no extra inference) is compared with labelled exemplars of each tier
(shipped in semcached/data/routing-exemplars.jsonl, extended by ``routing.exemplars``),
and the tier whose nearest exemplars are closest wins. Every decision carries its reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcached.config import ConfigError

SHIPPED_EXEMPLARS = Path(__file__).parent / "data" / "routing-exemplars.jsonl"
# A question this long (characters) is rarely a quick lookup.
LONG_QUESTION = 1500
# A tier's score is the mean cosine of its NEAREST exemplars to the question.
NEAREST = 3
# Below this best score no exemplar is like the question: the default tier.
MIN_SCORE = 0.25

_LANGUAGES = (r"python|rust|golang|go|java|javascript|typescript|js|ts|c\+\+|c#|kotlin|swift|ruby|php|"
              r"sql|bash|shell|powershell|scala|haskell|regex|html|css|react|django|pandas|numpy")
RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("code", re.compile(r"```|Traceback \(most recent call last\)|\b\w+(Error|Exception):|"
                        r"\b(def|fn|func|function|class|import|return|const|public static)\s+\w+\s*[({:=<]|"
                        r"#include\s*<|\bSELECT\b.+\bFROM\b|\bsegfault\b|\bstack ?trace\b"),
     "code or a stack trace in the question"),
    ("code", re.compile(rf"\b(write|implement|code|fix|debug|refactor|optimi[sz]e|unit[- ]test|port|convert)\b"
                        rf".{{0,60}}\b(code|function|method|script|program|class|query|regex|bug|api|endpoint|"
                        rf"algorithm|{_LANGUAGES})\b|\bin ({_LANGUAGES})\b", re.I),
     "a programming task"),
    ("hard", re.compile(r"\bstep[- ]by[- ]step\b|\bprove\b|\bproof\b|\bderive\b|\banaly[sz]e\b|\banalysis\b|"
                        r"\barchitect(ure)?\b|\bdesign (a|an|the)\b|\btrade-?offs?\b|\bcompare\b|"
                        r"\bcomparison\b|\bversus\b|\bvs\.?\s|\bpros and cons\b|\broot cause\b|\bdebug|"
                        r"\bstrategy\b|\bevaluate\b|\bcritique\b|\bin depth\b|\bin detail\b", re.I),
     "reasoning, analysis, architecture or comparison"),
]


@dataclass(frozen=True)
class Decision:
    tier: str
    reason: str


def load_exemplars(paths: list[Path]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((str(row["text"]), str(row["tier"])))
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}:{number}: expected {{\"text\", \"tier\"}}: {e}") from None
    return rows


class Classifier:
    """Rules, then exemplars. ``vectors`` are the exemplars' unit embeddings (rows)."""

    def __init__(self, tiers: list[str], default_tier: str, exemplars: list[tuple[str, str]],
                 vectors: np.ndarray | None) -> None:
        self.tiers = tiers
        self.default_tier = default_tier
        self._rules = [(tier, pattern, why) for tier, pattern, why in RULES if tier in tiers]
        keep = [i for i, (_, tier) in enumerate(exemplars) if tier in tiers]
        self._labels = [exemplars[i][1] for i in keep]
        self._vectors = vectors[keep] if vectors is not None and keep else None

    def classify(self, question: str, vector: np.ndarray | None) -> Decision:
        for tier, pattern, why in self._rules:
            if pattern.search(question):
                return Decision(tier, f"rule: {why}")
        if len(question) > LONG_QUESTION and "hard" in self.tiers:
            return Decision("hard", f"rule: a long question ({len(question)} characters)")
        if vector is None or self._vectors is None:
            return Decision(self.default_tier, "no rule matched: the default tier")
        similarities = self._vectors @ vector
        scores = {}
        for tier in set(self._labels):
            mine = np.sort(similarities[[i for i, t in enumerate(self._labels) if t == tier]])[::-1]
            scores[tier] = float(mine[:NEAREST].mean())
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        best, score = ranked[0]
        if score < MIN_SCORE:
            return Decision(self.default_tier, f"no rule matched and no exemplar is close ({best} {score:.2f})")
        runner_up = f", then {ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else ""
        return Decision(best, f"nearest exemplars: {best} {score:.2f}{runner_up}")
