"""The hit-quality harness: its arithmetic, its duplicate classes, and a run of the real
engine on a small labelled file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from semcached.config import ConfigError
from semcached.quality import Duplicates, Outcome, Pair, curve, evaluate, load_pairs, target_curve
from semcached.verifier import Calibration, Point


def test_duplicate_classes_follow_label_1_links_transitively() -> None:
    d = Duplicates([Pair("How old is the Earth?", "What is the age of Earth?", 1),
                    Pair("What is the age of Earth?", "How many years old is our planet?", 1),
                    Pair("How old is the Earth?", "How old is the Moon?", 0)])
    assert d.same("how old is the earth?", "How many years old is our planet?")
    assert not d.same("How old is the Earth?", "How old is the Moon?")
    assert d.same("Unseen question", "UNSEEN  question")  # the same question is its own duplicate


def test_curves_count_precision_and_recall_by_threshold_and_target() -> None:
    outcomes = [
        Outcome("exact", 1.0, 1.0, "q", True, True),
        Outcome("semantic", 0.95, 0.9, "q", True, True),
        Outcome("semantic", 0.92, 0.2, "q", False, False),
        Outcome("semantic", 0.85, 0.7, "q", True, True),
        Outcome("miss", 0.0, 0.0, "", False, True),
    ]
    rows = {r["min_similarity"]: r for r in curve(outcomes, [0.80, 0.90, 0.93, 0.99])}
    assert rows[0.80] == {"min_similarity": 0.80, "served": 4, "precision": 0.75, "recall": 0.75}
    assert rows[0.90] == {"min_similarity": 0.90, "served": 3, "precision": 0.6667, "recall": 0.5}
    assert rows[0.93] == {"min_similarity": 0.93, "served": 2, "precision": 1.0, "recall": 0.5}
    assert rows[0.99] == {"min_similarity": 0.99, "served": 1, "precision": 1.0, "recall": 0.25}
    points = [Point(0.8, 1.0, 0.5, 50), Point(0.5, 0.9, 0.75, 60)]
    calibration = Calibration({"verifier": points, "cosine": points}, 0.8, "m", "d")
    by_target = {r["target_precision"]: r for r in target_curve(outcomes, calibration, "verifier", [0.9, 0.95])}
    assert by_target[0.9] == {"target_precision": 0.9, "threshold": 0.5, "served": 3, "precision": 1.0, "recall": 0.75}
    assert by_target[0.95] == {"target_precision": 0.95, "threshold": 0.8, "served": 2, "precision": 1.0, "recall": 0.5}


def test_bad_files_are_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"a": "x", "b": "y", "label": 1}\n{"a": "x", "label": 1}\n')
    with pytest.raises(ConfigError, match=r"pairs.jsonl:2: expected"):
        load_pairs(path)
    path.write_text('{"a": "x", "b": "y", "label": 2}\n')
    with pytest.raises(ConfigError, match="label must be 0 or 1"):
        load_pairs(path)
    result = subprocess.run([sys.executable, "-m", "semcached", "eval-quality", "--data", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "label must be 0 or 1" in result.stderr


def test_the_real_engine_on_a_small_labelled_file(tmp_path: Path) -> None:
    pairs = [
        {"a": "How do I reset my password?", "b": "how do I reset my PASSWORD?", "label": 1},
        {"a": "How do I reset my password?", "b": "What's the way to reset my password", "label": 1},
        {"a": "What is 2+3?", "b": "What is 2+4?", "label": 0},
        {"a": "How tall is Mount Everest?", "b": "Who wrote Hamlet?", "label": 0},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    data_dir = tmp_path / "unused"
    config = tmp_path / "c.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n')
    for mode in ("pairs", "replay"):
        result = evaluate(path, mode, str(config))
        assert (result["lookups"], result["duplicates"], result["knob"]) == (4, 2, "verifier")
        rows = result["curve"]
        assert [r["served"] for r in rows] == sorted((r["served"] for r in rows), reverse=True)
        # At 0.85, a target the shipped calibration reaches: the exact duplicate and the
        # paraphrase, not 2+4 for 2+3. At the default 0.95 (out of its reach): the exact one.
        at_85 = next(r for r in rows if r["target_precision"] == 0.85)
        assert (at_85["served"], at_85["precision"], at_85["recall"]) == (2, 1.0, 1.0)
        assert (result["at_default"]["served"], result["at_default"]["recall"]) == (1, 0.5)
        loose = result["cosine_curve"][0]  # cosine 0.80 alone serves the near miss too
        assert (loose["served"], loose["precision"]) == (3, 0.6667)
        assert result["latency_ms"]["lookup"]["p50"] > 0
        assert result["latency_ms"]["verifier_1"]["p50"] > 0
    assert not data_dir.exists()  # the harness never touches the configured data directory


def test_calibration_is_measured_and_written(tmp_path: Path) -> None:
    pairs = [{"a": f"How do I cook rice number {i}?", "b": f"how to cook rice number {i}", "label": 1}
             for i in range(3)] + [{"a": "What is 2+3?", "b": "What is 2+4?", "label": 0}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "calibration.json"
    result = subprocess.run([sys.executable, "-m", "semcached", "eval-quality", "--data", str(path),
                             "--mode", "pairs", "--calibrate", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    calibration = Calibration.load(out)
    assert calibration.embedding_model.startswith("all-MiniLM-L6-v2-int8@")
    assert max(p.recall for p in calibration.curves["verifier"]) == 1.0
    refused = subprocess.run([sys.executable, "-m", "semcached", "eval-quality", "--data", str(path),
                              "--calibrate", str(out)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--mode pairs" in refused.stderr
