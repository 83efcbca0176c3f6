"""What applications told us about served hits, and what it changes.

Wrong feedback on a hit teaches two things. For the entry: the question it was wrongly
served for becomes a negative example, and questions close to it are refused that entry
from then on (after REMOVE_AFTER wrong reports and no right one the entry goes). For the
namespace: the observed precision of its recent feedback is compared to its target, and
while it falls short the namespace's target precision is raised step by step (stricter
hits), and lowered back while feedback shows it above target.

Every report is appended to ``feedback.log`` in the data directory and flushed before it
is acknowledged, so a restart replays the same state; a torn last line is dropped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcached.config import ConfigError

log = logging.getLogger("semcached.feedback")

# A question at least this close (cosine) to one an entry was wrongly served for, and
# closer to it than to the entry's own question, is refused that entry: "the same kind
# of question".
NEGATIVE_SIMILARITY = 0.90
REMOVE_AFTER = 3
# Recent reports per namespace that estimate its observed precision.
WINDOW = 100
MIN_REPORTS = 10
STEP = 0.01
MAX_TARGET = 0.999


@dataclass(frozen=True)
class Verdict:
    """The state of one entry and its namespace after a report."""

    right: int
    wrong: int
    remove: bool  # the entry should be removed from the cache
    target_precision: float  # the namespace's target now


class Feedback:
    def __init__(self, path: Path, target_of: Callable[[str], float],
                 is_live: Callable[[int], bool]) -> None:
        """Replays ``path``; ``target_of`` gives a namespace's configured target,
        ``is_live`` whether an entry is still stored."""
        self._path = path
        self._lock = threading.Lock()
        self._negatives: dict[int, list[np.ndarray]] = defaultdict(list)
        self._entry: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # id -> [right, wrong]
        self._recent: dict[str, deque[bool]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._raise: dict[str, float] = defaultdict(float)
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # namespace -> [right, wrong]
        self._replay(target_of, is_live)
        self._file = open(path, "a", encoding="utf-8")

    def record(self, namespace: str, entry_id: int, vector: np.ndarray | None, correct: bool,
               target: float) -> Verdict:
        """Logs and applies one report; ``target`` is the namespace's configured target."""
        line = {"namespace": namespace, "entry_id": entry_id, "correct": correct}
        if vector is not None:
            line["vector"] = base64.b64encode(vector.astype("<f4").tobytes()).decode()
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._apply(namespace, entry_id, vector, correct, target)
            right, wrong = self._entry[entry_id]
            return Verdict(right, wrong, right == 0 and wrong >= REMOVE_AFTER,
                           self._target(namespace, target))

    def refused(self, entry_id: int, vector: np.ndarray, similarity: float) -> bool:
        """Whether the entry was reported wrong for a question like this one: one at
        least NEGATIVE_SIMILARITY close, and closer than the entry's own question (at
        ``similarity``), so paraphrases of the entry's question are still served."""
        with self._lock:
            closeness = [float(vector @ n) for n in self._negatives.get(entry_id, [])]
        return any(c >= NEGATIVE_SIMILARITY and c > similarity for c in closeness)

    def target(self, namespace: str, configured: float) -> float:
        with self._lock:
            return self._target(namespace, configured)

    def forget(self, entry_id: int) -> None:
        with self._lock:
            self._negatives.pop(entry_id, None)
            self._entry.pop(entry_id, None)

    def close(self) -> None:
        self._file.close()

    def _target(self, namespace: str, configured: float) -> float:
        return min(MAX_TARGET, configured + self._raise[namespace]) if configured > 0 else 0.0

    def _apply(self, namespace: str, entry_id: int, vector: np.ndarray | None, correct: bool,
               target: float) -> None:
        self.counts[namespace][0 if correct else 1] += 1
        self._entry[entry_id][0 if correct else 1] += 1
        if not correct and vector is not None:
            self._negatives[entry_id].append(vector.astype(np.float32))
        recent = self._recent[namespace]
        recent.append(correct)
        if len(recent) >= MIN_REPORTS and target > 0:
            observed = sum(recent) / len(recent)
            if observed < target:
                self._raise[namespace] = min(self._raise[namespace] + STEP, MAX_TARGET - target)
            else:
                self._raise[namespace] = max(0.0, self._raise[namespace] - STEP / 2)

    def _replay(self, target_of: Callable[[str], float], is_live: Callable[[int], bool]) -> None:
        """Rebuilds the state from the log, skipping entries no longer stored. Namespace
        targets replay against today's configured target (the log does not keep the one
        each report was made under; the adjustment is a small correction either way)."""
        if not self._path.exists():
            return
        lines = self._path.read_bytes().split(b"\n")
        good = 0
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                good += len(raw) + (number < len(lines))
                continue
            try:
                line = json.loads(raw)
                namespace, entry_id, correct = str(line["namespace"]), int(line["entry_id"]), bool(line["correct"])
                vector = (np.frombuffer(base64.b64decode(line["vector"]), dtype="<f4").copy()
                          if "vector" in line else None)
            except (ValueError, KeyError, TypeError) as e:
                if number == len(lines):  # an unterminated last line: the write a crash cut
                    log.warning("%s: dropping a torn last line", self._path)
                    break
                raise ConfigError(f"{self._path}:{number} is damaged ({e}); move the file "
                                  "away to start without the feedback it holds") from None
            good += len(raw) + 1
            if is_live(entry_id):
                self._apply(namespace, entry_id, vector, correct, target_of(namespace))
        with open(self._path, "r+b") as f:
            f.truncate(good)
