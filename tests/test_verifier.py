"""The hit decision: calibration arithmetic, the shipped verifier on near misses and
paraphrases, and feedback (refusals, removal, namespace targets, restarts)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from semcached import config as configuration
from semcached.engine import Engine
from semcached.errors import InvalidArgument, NotFound
from semcached.embed import Embedder
from semcached.models import default_models_dir, resolve
from semcached.verifier import Calibration, Point, Verifier, curve

# Cosine 0.995 apart, opposite questions: a threshold cannot separate them.
NEAR_MISS_CACHED = "How do I convert Celsius to Fahrenheit?"
NEAR_MISS_ASKED = "How do I convert Fahrenheit to Celsius?"


def test_curve_gives_precision_and_recall_at_each_cut() -> None:
    scored = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, False)]
    points = curve(scored, duplicates=4)
    assert [(p.threshold, p.precision, p.recall, p.served) for p in points] == [
        (0.9, 1.0, 0.25, 1), (0.8, 1.0, 0.5, 2), (0.7, 0.6667, 0.5, 3),
        (0.6, 0.75, 0.75, 4), (0.5, 0.6, 0.75, 5)]


def test_setting_catches_the_most_at_the_target_and_is_strictest_when_out_of_reach() -> None:
    points = [Point(0.9, 0.99, 0.10, 100), Point(0.7, 0.95, 0.30, 300), Point(0.5, 0.90, 0.50, 500),
              Point(0.3, 0.97, 0.05, 10)]  # too few served to trust, however precise
    calibration = Calibration({"verifier": points, "cosine": points}, 0.8, "m", "d")
    assert calibration.setting("verifier", 0.95).threshold == 0.7
    assert calibration.setting("verifier", 0.90).threshold == 0.5
    assert calibration.setting("verifier", 0.995).threshold == 0.9  # unreachable: strictest
    assert calibration.setting("verifier", 0.0).threshold == 0.0  # serve the best candidate


@pytest.fixture
def engine_config(tmp_path: Path) -> configuration.Config:
    config = configuration.load(None, environ={})
    config.server.data_dir = str(tmp_path / "data")
    return config


def run_engine(config: configuration.Config, body: Callable[[Engine], Awaitable[None]]) -> None:
    async def run() -> None:
        engine = Engine.from_config(config)
        try:
            await body(engine)
        finally:
            await engine.close()

    asyncio.run(run())


def test_the_verifier_refuses_near_misses_that_cosine_would_serve(engine_config: configuration.Config) -> None:
    # 0.85 is a target the shipped calibration reaches (about half the duplicates served).
    target = 0.85

    async def body(engine: Engine) -> None:
        await engine.store_entry("sums", "What is 2+3?", "5")
        await engine.store_entry("census", "What is the population of India in 2020?", "1.38 billion")
        await engine.store_entry("ns", "How do I reset my password?", "Settings")
        for namespace, asked in (("sums", "What is 2+4?"), ("census", "What is the population of India in 2010?")):
            forced = await engine.lookup(namespace, asked, target_precision=0.0)
            assert forced.hit and forced.similarity >= 0.8  # above the candidate floor
            assert forced.verifier_score < 0.1
            assert (await engine.lookup(namespace, asked, target_precision=target)).kind == "miss"
        paraphrase = await engine.lookup("ns", "what's the way to reset my password", target_precision=target)
        assert (paraphrase.kind, paraphrase.response) == ("semantic", "Settings")
        assert paraphrase.verifier_score > engine.calibration.setting("verifier", target).threshold
        exact = await engine.lookup("sums", "what is 2+3?")
        assert (exact.kind, exact.verifier_score) == ("exact", 1.0)
        stats = (await engine.stats()).namespaces["ns"]
        assert stats.target_precision == 0.95 and 0 <= stats.expected_recall < 0.05  # out of reach: said so

    run_engine(engine_config, body)


def test_wrong_feedback_stops_a_near_miss_pattern_and_survives_a_restart(
        engine_config: configuration.Config) -> None:
    ids: dict[str, int] = {}

    async def report(engine: Engine) -> None:
        ids["entry"] = (await engine.store_entry("ns", NEAR_MISS_CACHED, "F = C × 9/5 + 32")).entry_id
        # Served on request whatever the verifier says, until feedback says it is wrong.
        served = await engine.lookup("ns", NEAR_MISS_ASKED, target_precision=0.0)
        assert served.entry_id == ids["entry"]
        result = await engine.record_feedback("ns", ids["entry"], False, NEAR_MISS_ASKED)
        assert (result.right, result.wrong, result.removed) == (0, 1, False)
        for asked in (NEAR_MISS_ASKED, "how can I convert fahrenheit into celsius?"):
            assert (await engine.lookup("ns", asked, target_precision=0.0)).kind == "miss"
        # Questions nearer the entry's own than the wrong one are still served.
        assert (await engine.lookup("ns", "how do i convert celsius into fahrenheit", target_precision=0.0)).hit
        assert (await engine.lookup("ns", NEAR_MISS_CACHED)).kind == "exact"
        stats = await engine.stats()
        assert (stats.feedback_wrong, stats.namespaces["ns"].feedback_wrong) == (1, 1)

    async def after_restart(engine: Engine) -> None:
        assert (await engine.lookup("ns", NEAR_MISS_ASKED, target_precision=0.0)).kind == "miss"
        assert (await engine.stats()).feedback_wrong == 1

    run_engine(engine_config, report)
    log = Path(engine_config.server.data_dir) / "feedback.log"
    with open(log, "a") as f:
        f.write('{"namespace": "ns", "entry_id": 1')  # a write a crash cut short
    run_engine(engine_config, after_restart)
    assert log.read_text().endswith("}\n")  # the torn line was dropped


def test_repeated_wrong_feedback_removes_the_entry_and_raises_the_namespace_target(
        engine_config: configuration.Config) -> None:
    async def body(engine: Engine) -> None:
        entry = (await engine.store_entry("ns", "Who wrote Hamlet?", "Shakespeare")).entry_id
        other = (await engine.store_entry("ns", "Who painted the Mona Lisa?", "Leonardo")).entry_id
        for i, asked in enumerate(("Who wrote Macbeth?", "Who wrote Othello?", "Who wrote Faust?")):
            result = await engine.record_feedback("ns", entry, False, asked)
            assert result.removed == (i == 2)
        assert engine.store.get(entry) is None
        with pytest.raises(NotFound, match="no entry"):
            await engine.record_feedback("ns", entry, True)
        for _ in range(7):  # 10 reports, 3 right: far below the 0.95 target
            result = await engine.record_feedback("ns", other, True)
        assert result.target_precision > 0.95
        assert (await engine.stats()).namespaces["ns"].target_precision == result.target_precision
        # Another namespace keeps its own target.
        await engine.store_entry("calm", "Who wrote Hamlet?", "Shakespeare")
        assert (await engine.stats()).namespaces["calm"].target_precision == 0.95

    run_engine(engine_config, body)


def test_bad_feedback_is_refused(engine_config: configuration.Config) -> None:
    async def body(engine: Engine) -> None:
        entry = (await engine.store_entry("ns", "Who wrote Hamlet?", "Shakespeare")).entry_id
        with pytest.raises(InvalidArgument, match="needs the prompt"):
            await engine.record_feedback("ns", entry, False)
        with pytest.raises(InvalidArgument, match="entry_id must be positive"):
            await engine.record_feedback("ns", 0, True)
        with pytest.raises(NotFound):
            await engine.record_feedback("other", entry, True)  # namespaces are walls
        with pytest.raises(InvalidArgument, match="target_precision"):
            await engine.lookup("ns", "x", target_precision=1.0)

    run_engine(engine_config, body)


def test_verifier_off_decides_by_the_cosine_calibration(engine_config: configuration.Config) -> None:
    engine_config.cache.verifier = "none"

    async def body(engine: Engine) -> None:
        assert engine.verifier is None
        await engine.store_entry("ns", "How do I reset my password?", "Settings")
        forced = await engine.lookup("ns", "what's the way to reset my password", target_precision=0.0)
        assert forced.hit and forced.verifier_score == 0.0
        threshold = engine.calibration.setting("cosine", 0.95).threshold
        strict = await engine.lookup("ns", "what's the way to reset my password")
        assert strict.hit == (forced.similarity >= threshold)
        assert (await engine.stats()).verifier == "none"

    run_engine(engine_config, body)


def test_with_the_exact_tier_off_a_repeated_question_is_served_without_the_verifier(
        engine_config: configuration.Config) -> None:
    engine_config.cache.exact_tier = False

    async def body(engine: Engine) -> None:
        await engine.store_entry("ns", "How do I reset my password?", "Settings")
        again = await engine.lookup("ns", "how do I  reset my PASSWORD?")  # same normal form
        assert again.kind == "semantic" and again.verifier_score == 1.0  # at the strict default target
        other = await engine.lookup("ns", "How do I reset my username?")
        assert not other.hit

    run_engine(engine_config, body)


def priors_of(verifier: Verifier, asked: str, cached: list[str]) -> list[float]:
    """What the engine passes the scorer: each pair's prior from the shipped combiner."""
    assert verifier.combiner is not None
    embedder = Embedder(resolve(configuration.Config().embedding.model, default_models_dir(), "mean"))
    vectors = embedder.embed([asked, *cached])
    return [verifier.combiner.prior(asked, c, float(vectors[0] @ vectors[i]), vectors[0], vectors[i])
            for i, c in enumerate(cached, 1)]


def test_scorer_scores_the_second_order_only_where_the_threshold_is_reachable() -> None:
    from semcached.batching import Batcher, Workers
    from semcached.verifier import BUILTIN, Scorer

    verifier = Verifier(BUILTIN)
    assert verifier.combiner is not None and Verifier(BUILTIN, combined=False).combiner is None  # for fitting a new one
    runs: list[list[tuple[str, str]]] = []

    def run(pairs: list[tuple[str, str]]) -> list[float]:
        runs.append(list(pairs))
        return verifier.probabilities(pairs).tolist()

    async def go() -> None:
        workers = Workers(1, "test")
        try:
            scorer = Scorer(verifier, Batcher(workers, run), cache_entries=100)
            asked = "How do I bake sourdough bread at home?"
            cached = ["How can I bake sourdough bread at home?", "What is the capital city of France?"]
            priors = priors_of(verifier, asked, cached)
            strict = await scorer.scores(asked, cached, priors, 0.9)
            assert strict[0] is not None and strict[1] is None  # France cannot reach 0.9
            assert runs == [[(asked, c) for c in cached], [(cached[0], asked)]]
            # Not to the last digit: the int8 model quantizes activations per batch, padding
            # included, so a pair's score moves by a few thousandths with its batch-mates.
            assert strict[0] == pytest.approx(float(verifier.scores(asked, cached, priors)[0]), abs=0.01)
            runs.clear()
            everything = await scorer.scores(asked, cached, priors, 0.0)  # remembered pairs run nothing
            assert runs == [[(cached[1], asked)]] and everything[0] == strict[0] and everything[1] is not None
        finally:
            workers.close()

    asyncio.run(go())
