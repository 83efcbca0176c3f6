"""The verifier's combiner: lexical features, the score and its bound, its file, its fit."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from semcached import lexical
from semcached.config import ConfigError
from semcached.verifier import COMBINER_INPUTS, Combiner, combine

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from fit_combiner import fit  # noqa: E402

FEATURES = dict.fromkeys(lexical.NAMES, 0.0)


def named(asked: str, cached: str) -> dict[str, float]:
    return dict(zip(lexical.NAMES, lexical.features(asked, cached)))


def test_features_say_where_two_questions_differ() -> None:
    swapped = named("Why do Poles dislike Russians?", "Why do Russians dislike Poles?")
    assert swapped["same_words_other_order"] == 1.0 and swapped["content_overlap"] == 1.0
    language = named("Pros and cons of C++ as a first language?", "Pros and cons of C# as a first language?")
    assert language["symbols_differ"] == 1.0 and language["content_only_one_side"] == 1.0
    assert named("What is 2+3?", "What is 2+4?")["numbers_differ"] == 1.0
    assert named("Is coffee good for you?", "Isn't coffee good for you?")["negation_differs"] == 1.0
    assert named("Arguments for virtue ethics?", "Arguments against virtue ethics?")["opposite_words"] == 1.0
    assert named("Arguments for and against X?", "Arguments against and for X?")["opposite_words"] == 0.0
    same = named("How do I reset my password?", "how do i reset my password")
    assert same == {**FEATURES, "word_overlap": 1.0, "content_overlap": 1.0, "first_word_same": 1.0}


def combiner(rng: random.Random) -> Combiner:
    weights = [rng.uniform(-0.3, 0.3) for _ in COMBINER_INPUTS]
    return Combiner(0.3, weights, -0.5, [rng.uniform(-1, 1) for _ in range(8)], "toy@1")


def test_combiner_bound_is_the_best_any_second_order_can_give() -> None:
    rng = random.Random(3)
    vectors = np.eye(4, dtype=np.float32)
    grid = [1 / (1 + math.exp(-x / 100)) for x in range(-600, 601)]  # logits -6 .. 6
    for _ in range(20):  # linear and square weights of both signs: parabolas up and down
        c = combiner(rng)
        cached = rng.choice(["How can I bake bread?", "Who baked bread?"])
        prior = c.prior("How do I bake bread?", cached, 0.9, vectors[0], vectors[rng.randrange(4)])
        first = rng.random()
        bound = combine(c, prior, first, None)
        scores = [combine(c, prior, first, second) for second in grid]
        assert all(0.0 < score < 1.0 for score in scores)
        assert bound >= max(scores) and bound == pytest.approx(max(scores), abs=1e-4)  # tight
    assert combine(None, 5.0, 0.8, 0.6) == pytest.approx(0.7)  # no combiner: the mean, prior unused
    assert combine(None, 5.0, 0.8, None) == pytest.approx(0.9)


def test_vector_match_weighs_product_and_distance() -> None:
    c = Combiner(0.0, [0.0] * len(COMBINER_INPUTS), 0.5, [1.0, 2.0, 10.0, 20.0], "toy@1")
    a, b = np.array([0.6, 0.8], dtype=np.float32), np.array([0.8, 0.6], dtype=np.float32)
    # 0.5 + (1*0.48 + 2*0.48) + (10*0.2 + 20*0.2)
    assert c.vector_match(a, b) == pytest.approx(0.5 + 1.44 + 6.0, abs=1e-5)


def test_combiner_file_round_trips_and_a_bad_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "combiner.json"
    c = combiner(random.Random(4))
    c.save(path, "pairs.jsonl")
    again = Combiner.load(path)
    assert (again.bias, again.weights, again.embedding_model) == (c.bias, c.weights, c.embedding_model)
    assert np.allclose(again.vector_weights, c.vector_weights, atol=1e-6)
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "inputs": body["inputs"][:-1]}))
    with pytest.raises(ConfigError, match="combiner.json.*inputs"):
        Combiner.load(path)
    path.write_text(json.dumps({**body, "weights": body["weights"][:-1]}))
    with pytest.raises(ConfigError, match="weights for"):
        Combiner.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the verifier combiner"):
        Combiner.load(path)


def test_fit_finds_the_direction_that_separates_the_labels() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 3))
    y = (x[:, 0] - 2 * x[:, 2] + 0.5 + rng.normal(scale=0.5, size=2000) > 0).astype(float)
    bias, weights = fit(x, y, l2=0.1)
    assert weights[0] > 1 and weights[2] < -2 and abs(weights[1]) < 0.5 and bias > 0
    accuracy = ((x @ weights + bias > 0) == (y > 0)).mean()
    assert accuracy > 0.85
