"""Fits the verifier's combiner (semcached.verifier.Combiner): first its vector model, a
logistic regression over the two embeddings of a pair (their product and absolute
difference per dimension) on ``--train``; then the combiner itself, a logistic regression
over the cross-encoder's logits in both orders, the cosine, the vector model's logit and
the lexical features (semcached.lexical), on ``--pairs``.

``--pairs`` must be pairs the cross-encoder never trained on and, like the data it will
serve, made of questions it never saw: the shipped one is fitted on one half of dev.jsonl
(split by question components, scripts/split_pairs.py), calibrated on that half, and
measured on the other:

    python scripts/split_pairs.py dev.jsonl --out-a dev-a.jsonl --out-b dev-b.jsonl
    python scripts/fit_combiner.py --verifier python/semcached/data/verifier-minilm-l6-qqp \\
        --train train.jsonl --pairs dev-a.jsonl
    semcached eval-quality --data dev-a.jsonl --mode pairs \\
        --calibrate python/semcached/data/verifier-minilm-l6-qqp/calibration.json
    semcached eval-quality --data dev-b.jsonl --mode pairs

Runs in semcached's own environment (numpy, onnxruntime): Newton's method needs nothing
more. About 6 minutes on 2 cores, most of it embedding train.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from semcached import lexical
from semcached.config import CacheConfig, ConfigError
from semcached.embed import Embedder
from semcached.models import default_models_dir, resolve
from semcached.quality import UNCALIBRATED, load_pairs
from semcached.verifier import COMBINER_INPUTS, Combiner, Verifier, logit

BATCH = 64


def load(path: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The pairs and their labels, read and checked as the quality harness reads them."""
    pairs = load_pairs(path)
    return [(p.a, p.b) for p in pairs], np.array([float(p.label) for p in pairs])


def by_length(pairs: list[tuple[str, str]]) -> list[list[int]]:
    """Batches of pair indices of like length (a batch pads to its longest)."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    return [order[s:s + BATCH] for s in range(0, len(order), BATCH)]


def embeddings(embedder: Embedder, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((len(pairs), embedder.dim), dtype=np.float32)
    b = np.zeros_like(a)
    for batch in by_length(pairs):
        a[batch] = embedder.embed([pairs[i][0] for i in batch])
        b[batch] = embedder.embed([pairs[i][1] for i in batch])
    return a, b


def vector_inputs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What Combiner.vector_match weighs, in its order."""
    return np.hstack([a * b, np.abs(a - b)])


def combiner_inputs(verifier: Verifier, vector_match: np.ndarray, a: np.ndarray, b: np.ndarray,
                    pairs: list[tuple[str, str]]) -> np.ndarray:
    """One row of COMBINER_INPUTS per pair."""
    rows = np.zeros((len(pairs), len(COMBINER_INPUTS)))
    for batch in by_length(pairs):
        first = verifier.probabilities([pairs[i] for i in batch])
        second = verifier.probabilities([(pairs[i][1], pairs[i][0]) for i in batch])
        for j, i in enumerate(batch):
            rows[i] = [logit(float(first[j])), logit(float(second[j])), float(a[i] @ b[i]),
                       vector_match[i], *lexical.features(*pairs[i])]
    return rows


def fit(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 50) -> tuple[float, np.ndarray]:
    """L2-penalized logistic regression by Newton's method (the penalty spares the bias)."""
    design = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(w[0]), w[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verifier", type=Path, required=True, help="folder with model.onnx and tokenizer.json")
    parser.add_argument("--train", type=Path, required=True, help="labelled pairs for the vector model")
    parser.add_argument("--pairs", type=Path, required=True, help="labelled pairs of questions new to the model")
    parser.add_argument("--embedding-model", default="all-MiniLM-L6-v2-int8")
    parser.add_argument("--l2", type=float, default=1.0, help="the combiner's penalty")
    parser.add_argument("--min-similarity", type=float, default=CacheConfig().min_similarity,
                        help="fit on the pairs the verifier would read: those at least this close")
    parser.add_argument("--vector-l2", type=float, default=1.0, help="the vector model's penalty")
    args = parser.parse_args()
    embedder = Embedder(resolve(args.embedding_model, default_models_dir(), "mean"))
    verifier = Verifier(args.verifier, UNCALIBRATED, combined=False)  # before the long part: fail fast
    train, y_train = load(args.train)
    vector_bias, vector_weights = fit(vector_inputs(*embeddings(embedder, train)), y_train, args.vector_l2)
    pairs, y = load(args.pairs)
    a, b = embeddings(embedder, pairs)
    vector_match = vector_inputs(a, b) @ vector_weights + vector_bias
    x = combiner_inputs(verifier, vector_match, a, b, pairs)
    read = x[:, COMBINER_INPUTS.index("similarity")] >= args.min_similarity
    bias, weights = fit(x[read], y[read], args.l2)
    combiner = Combiner(round(bias, 6), [round(float(w), 6) for w in weights], round(vector_bias, 6),
                        vector_weights.tolist(), embedder.model_id)
    combiner.save(args.verifier / "combiner.json", f"{args.pairs.name}; vector model: {args.train.name}")
    print(json.dumps({"bias": bias, **dict(zip(COMBINER_INPUTS, weights.round(4).tolist()))}))


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, OSError) as e:  # a missing or malformed file: say which, no traceback
        raise SystemExit(f"fit_combiner: {e}") from None
