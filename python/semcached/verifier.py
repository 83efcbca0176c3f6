"""The hit decision behind the nearest-neighbour search.

A cosine threshold cannot tell "What is 2+3?" from "What is 2+4?": the embeddings are
built to place related questions close, not to say whether one answer serves both. The
verifier is a cross-encoder (all-MiniLM-L6-v2 fine-tuned on labelled duplicate pairs,
int8 ONNX, trained by scripts/train_verifier.py) that reads the asked and the cached
question together, in both orders; a combiner (``Combiner``, fitted by
scripts/fit_combiner.py on pairs of questions the cross-encoder never saw) weighs that
with the cosine, a linear model over the two embeddings and the lexical differences of the
pair, into the probability that one answer serves both.

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

from semcached import lexical
from semcached.batching import LRU, Batcher
from semcached.config import ConfigError
from semcached.models import file_sha256

BUILTIN = Path(__file__).parent / "data" / "verifier-minilm-l6-qqp"
# Both questions together; longer pairs are cut (the model trained on at most this).
MAX_TOKENS = 96
# A threshold whose precision was measured on fewer served hits is too noisy to trust.
MIN_SERVED = 40
# A cross-encoder logit is clipped to +-this before the combiner reads it (as when it was
# fitted), which also bounds what an order not yet scored can add: the tighter, the more
# second orders are skipped. The shipped int8 model's logits on all of dev.jsonl lie in
# [-5.3, 3.5], so this clip changes no score seen there.
LOGIT_LIMIT = 6.0
# What the combiner weighs, besides its bias: the cross-encoder's logit in each order, the
# cosine, the vector model's logit (``Combiner.vector_match``), the lexical features.
COMBINER_INPUTS = ("asked_first", "cached_first", "similarity", "vector_match") + lexical.NAMES


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return max(-LOGIT_LIMIT, min(LOGIT_LIMIT, float(np.log(p / (1 - p)))))


class Combiner:
    """Turns the cross-encoder's two orders and what else is known of a pair into the
    probability that one answer serves both: a logistic model over ``COMBINER_INPUTS``.

    Why more than the cross-encoder: fine-tuned on 34k pairs, it is 95% precise at 25%
    recall on train pairs whose questions it mostly saw, but 87% on dev.jsonl, whose
    questions are new to it.
    What generalizes better to new questions is what it was not fitted on: the cosine, a
    linear model over the two embeddings (their product and distance per dimension,
    fitted on train.jsonl: ``vector_match``) and the lexical features. Together 91% on
    dev (two-fold, fitted on one half, measured on the other)."""

    def __init__(self, bias: float, weights: list[float], vector_bias: float,
                 vector_weights: list[float], embedding_model: str) -> None:
        if len(weights) != len(COMBINER_INPUTS) or len(vector_weights) % 2:
            raise ValueError(f"{len(weights)} weights for {len(COMBINER_INPUTS)} inputs, "
                             f"{len(vector_weights)} vector weights")
        self.bias, self.weights = bias, list(weights)
        self.vector_bias, self.vector_weights = vector_bias, np.asarray(vector_weights, dtype=np.float32)
        self.embedding_model = embedding_model  # the vectors vector_match was fitted on

    @property
    def dim(self) -> int:
        return len(self.vector_weights) // 2

    def vector_match(self, asked: np.ndarray, cached: np.ndarray) -> float:
        """The vector model's logit for a pair of normalized embeddings."""
        w = self.vector_weights
        return self.vector_bias + float(w[:self.dim] @ (asked * cached) + w[self.dim:] @ np.abs(asked - cached))

    def prior(self, asked: str, cached: str, similarity: float, asked_vector: np.ndarray,
              cached_vector: np.ndarray) -> float:
        """The model's sum over everything but the cross-encoder (a few microseconds)."""
        rest = (similarity, self.vector_match(asked_vector, cached_vector), *lexical.features(asked, cached))
        return self.bias + sum(w * x for w, x in zip(self.weights[2:], rest))

    def score(self, prior: float, first: float, second: float | None) -> float:
        """From the probabilities of (asked, cached) and (cached, asked); with ``second``
        None, the highest score any second order could give."""
        w_first, w_second = self.weights[:2]
        reach = LOGIT_LIMIT if w_second >= 0 else -LOGIT_LIMIT
        z = prior + w_first * logit(first) + w_second * (reach if second is None else logit(second))
        return float(1.0 / (1.0 + np.exp(-z)))

    def save(self, path: Path, data: str) -> None:
        body = {"inputs": list(COMBINER_INPUTS), "bias": self.bias, "weights": self.weights,
                "embedding_model": self.embedding_model, "data": data, "vector_bias": self.vector_bias,
                "vector_weights": [round(float(w), 6) for w in self.vector_weights]}
        path.write_text(json.dumps(body) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Combiner:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if tuple(data["inputs"]) != COMBINER_INPUTS:
                raise ValueError(f"its inputs {data['inputs']} are not {list(COMBINER_INPUTS)}")
            return cls(float(data["bias"]), [float(w) for w in data["weights"]], float(data["vector_bias"]),
                       [float(w) for w in data["vector_weights"]], str(data["embedding_model"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot read the verifier combiner {path}: {e}") from None


def combine(combiner: Combiner | None, prior: float, first: float, second: float | None) -> float:
    """The verifier's score (see ``Combiner.score``). Without a combiner (a verifier folder
    that has none, or one fitted on other embeddings): the mean probability of both orders."""
    if combiner is None:
        return (first + (1.0 if second is None else second)) / 2
    return combiner.score(prior, first, second)


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

    def __init__(self, folder: Path, calibration: Calibration | None = None, combined: bool = True) -> None:
        """``calibration`` replaces the folder's calibration.json (to make a new one);
        ``combined`` False ignores its combiner.json (to fit a new one, whatever the old
        one's inputs)."""
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
        combiner = folder / "combiner.json"
        # None without one, or (Engine.from_config) when its vectors are not the engine's.
        self.combiner: Combiner | None = Combiner.load(combiner) if combined and combiner.is_file() else None

    def scores(self, asked: str, cached: list[str], priors: list[float]) -> np.ndarray:
        """For each cached question, the probability that one answer serves both: the
        model read in both orders (it reads a pair asymmetrically), combined with the
        pair's prior (``Combiner.prior``; ignored without a combiner)."""
        if not cached:
            return np.zeros(0, dtype=np.float32)
        p = self.probabilities([(asked, c) for c in cached] + [(c, asked) for c in cached])
        n = len(cached)
        return np.array([combine(self.combiner, priors[i], float(p[i]), float(p[n + i])) for i in range(n)],
                        dtype=np.float32)

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
    order of a pair scored only when the first leaves the score able to reach the
    threshold, so a candidate ruled out by its first order costs one pass, not two."""

    def __init__(self, verifier: Verifier, batcher: Batcher[tuple[str, str], float], cache_entries: int) -> None:
        self.verifier = verifier
        self._batcher = batcher
        self._cache: LRU[tuple[str, str], float] = LRU(cache_entries)

    async def scores(self, asked: str, cached: list[str], priors: list[float],
                     threshold: float) -> list[float | None]:
        """The verifier's score of each cached question (with its ``Combiner.prior``), or
        None where it cannot reach ``threshold``."""
        combiner = self.verifier.combiner
        first = await self._probabilities([(asked, c) for c in cached])
        alive = [i for i, p in enumerate(first) if combine(combiner, priors[i], p, None) >= threshold - 1e-6]
        second = await self._probabilities([(cached[i], asked) for i in alive])
        out: list[float | None] = [None] * len(cached)
        for i, p in zip(alive, second):
            out[i] = float(np.float32(combine(combiner, priors[i], first[i], p)))
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
