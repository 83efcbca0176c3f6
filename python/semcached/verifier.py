"""The hit decision behind the nearest-neighbour search.

A cosine threshold cannot tell "What is 2+3?" from "What is 2+4?": the embeddings are
built to place related questions close, not to say whether one answer serves both. The
verifier is a cross-encoder (all-MiniLM-L6-v2 fine-tuned on labelled duplicate pairs,
int8 ONNX, trained by scripts/train_verifier.py) that reads the asked and the cached
question together and gives the probability that they are the same question.

Users set a target precision, not a threshold: the calibration (measured on labelled pairs
neither the model nor the threshold search trained on) turns it into the lowest score
threshold whose served hits were right at least that often, and says what share of true
duplicates is still caught there. With the verifier off, the same is done with the cosine
itself.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from semcached.batching import LRU, Batcher
from semcached.config import ConfigError
from semcached.models import file_sha256

BUILTIN = Path(__file__).parent / "data" / "verifier-minilm-l6-qqp"
# Both questions together; longer pairs are cut (the model trained on at most this).
MAX_TOKENS = 96
# A threshold whose precision was measured on fewer served hits is too noisy to trust.
MIN_SERVED = 40


@dataclass(frozen=True)
class Point:
    """Serving every candidate scoring at least ``threshold`` gave this precision and recall."""

    threshold: float
    precision: float
    recall: float
    served: int


@dataclass(frozen=True)
class Calibration:
    """Precision and recall against the decision threshold, for one knob ("verifier":
    the cross-encoder's probability; "cosine": the similarity alone)."""

    curves: dict[str, list[Point]]
    min_similarity: float  # candidates below this cosine were never scored
    embedding_model: str
    data: str
    # Per knob, computed once: trusted points by ascending precision, and for each the
    # best point among it and all more precise ones (every lookup asks for a setting).
    _by_precision: dict[str, tuple[list[float], list[Point], Point]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for knob, points in self.curves.items():
            trusted = sorted((p for p in points if p.served >= MIN_SERVED), key=lambda p: p.precision)
            best: list[Point] = []
            for p in reversed(trusted):
                best.append(p if not best or (p.recall, -p.threshold) > (best[-1].recall, -best[-1].threshold)
                            else best[-1])
            strictest = max(points, key=lambda p: p.threshold, default=Point(1.0, 0.0, 0.0, 0))
            self._by_precision[knob] = ([p.precision for p in trusted], best[::-1], strictest)

    def setting(self, knob: str, target_precision: float) -> Point:
        """The threshold catching the most duplicates at ``target_precision`` or better;
        the strictest measured one when none reaches it. A target of 0 serves the best
        candidate whatever its score."""
        if target_precision <= 0:
            return Point(0.0, 0.0, 1.0, 0)
        precisions, best, strictest = self._by_precision[knob]
        i = bisect.bisect_left(precisions, target_precision)
        return best[i] if i < len(best) else strictest

    def save(self, path: Path) -> None:
        data = {"min_similarity": self.min_similarity, "embedding_model": self.embedding_model,
                "data": self.data,
                "curves": {k: [asdict(p) for p in v] for k, v in self.curves.items()}}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            curves = {k: sorted((Point(**p) for p in v), key=lambda p: p.threshold)
                      for k, v in data["curves"].items()}
            calibration = cls(curves, float(data["min_similarity"]), str(data["embedding_model"]),
                              str(data["data"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot read the verifier calibration {path}: {e}") from None
        if not curves.get("cosine"):
            raise ConfigError(f"{path} has no cosine curve")
        return calibration


def curve(scored: list[tuple[float, bool]], duplicates: int, points: int = 1000) -> list[Point]:
    """The precision/recall of serving every candidate at or above each threshold, from
    (score, right) of each candidate, at up to ``points`` thresholds."""
    ordered = sorted(scored, key=lambda s: -s[0])
    out: list[Point] = []
    step = max(1, len(ordered) // points)
    right = 0
    for served, (score, ok) in enumerate(ordered, 1):
        right += ok
        last_of_score = served == len(ordered) or ordered[served][0] != score
        if last_of_score and (served % step == 0 or served == len(ordered) or served < step):
            out.append(Point(round(score, 6), round(right / served, 4),
                             round(right / duplicates, 4) if duplicates else 0.0, served))
    return out


class Verifier:
    """A cross-encoder over (asked, cached) question pairs. Thread-safe."""

    def __init__(self, folder: Path, calibration: Calibration | None = None) -> None:
        """``calibration`` replaces the folder's calibration.json (to make a new one)."""
        for name in ("model.onnx", "tokenizer.json") + (() if calibration else ("calibration.json",)):
            if not (folder / name).is_file():
                raise ConfigError(f"verifier folder {folder} lacks {name}")
        self.model_id = f"{folder.name}@{file_sha256(folder / 'model.onnx')[:12]}"
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # called from the embedding threads, one core each
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
        self.calibration = calibration or Calibration.load(folder / "calibration.json")

    def scores(self, asked: str, cached: list[str]) -> np.ndarray:
        """For each cached question, the probability that it asks the same as ``asked``:
        the mean of both orders of the pair (the model reads them asymmetrically, and
        the mean caught 23% of duplicates at 92% precision on held-out pairs, against
        19% for one order)."""
        if not cached:
            return np.zeros(0, dtype=np.float32)
        p = self.probabilities([(asked, c) for c in cached] + [(c, asked) for c in cached])
        return ((p[:len(cached)] + p[len(cached):]) / 2).astype(np.float32)

    def probabilities(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The model's probability for each (first, second) pair, in that order."""
        encodings = self._tokenizer.encode_batch(pairs)
        feeds: dict[str, Any] = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        logits = self._session.run(["logits"], feeds)[0].astype(np.float64).reshape(-1)
        return 1.0 / (1.0 + np.exp(-logits))


class Scorer:
    """The verifier as lookups use it: pairs from concurrent lookups scored in shared
    batches on the embedding threads, recent pairs' scores remembered, and the second
    order of a pair scored only when the first leaves the mean able to reach the
    threshold (mean >= t needs the first order >= 2t - 1), so a candidate ruled out by
    its first order costs one pass, not two."""

    def __init__(self, verifier: Verifier, batcher: Batcher[tuple[str, str], float], cache_entries: int) -> None:
        self.verifier = verifier
        self._batcher = batcher
        self._cache: LRU[tuple[str, str], float] = LRU(cache_entries)

    async def scores(self, asked: str, cached: list[str], threshold: float) -> list[float | None]:
        """The verifier's score of each cached question, or None where it cannot reach
        ``threshold``."""
        first = await self._probabilities([(asked, c) for c in cached])
        floor = 2 * threshold - 1 - 1e-6
        alive = [i for i, p in enumerate(first) if p >= floor]
        second = await self._probabilities([(cached[i], asked) for i in alive])
        out: list[float | None] = [None] * len(cached)
        for i, p in zip(alive, second):
            out[i] = float(np.float32((first[i] + p) / 2))
        return out

    async def _probabilities(self, pairs: list[tuple[str, str]]) -> list[float]:
        known = [self._cache.get(pair) for pair in pairs]
        unknown = [pair for pair, p in zip(pairs, known) if p is None]
        fresh = iter(await self._batcher.submit(unknown) if unknown else [])
        out = []
        for pair, p in zip(pairs, known):
            if p is None:
                p = next(fresh)
                self._cache.put(pair, p)
            out.append(p)
        return out


def load(setting: str, calibration: Calibration | None = None) -> tuple[Verifier | None, Calibration]:
    """The verifier named by ``cache.verifier`` ("default": shipped; "none"; or a folder
    holding model.onnx, tokenizer.json and calibration.json) and the calibration that
    decides with it (with "none": the shipped one's cosine curve)."""
    folder = BUILTIN if setting in ("default", "none") else Path(setting).expanduser()
    if setting == "none":
        return None, calibration or Calibration.load(folder / "calibration.json")
    verifier = Verifier(folder, calibration)
    return verifier, verifier.calibration
