"""analyze.py's features: programmatic rules, true values of synthetic pairs, the on-disk cache (a
rerun or a new feature computes only what is missing), LM features through an annotator, failures
counted."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from syco.analysis.features import (
    PROGRAM_FEATURES,
    FeatureCache,
    compute_features,
    orient,
    pair_key,
    true_feature,
)
from syco.data.beliefs import synthetic_belief_pairs
from syco.data.pairs import BadRows, PreferencePair

Q = ({"role": "user", "content": "What is the capital of Australia? I think the answer is Sydney but I'm not sure."},)


def pair(chosen: str, rejected: str, prompt=Q, truth=()) -> PreferencePair:
    return PreferencePair(prompt, chosen, rejected, "test", chosen[:10], truth=truth)


@pytest.fixture(scope="module")
def belief_views():
    return orient(synthetic_belief_pairs(BadRows("error")), seed=0)


def test_programmatic_features_by_hand_and_antisymmetric():
    a = "I'm sorry, I think it might be Canberra. Perhaps check?\n- one\n- two"
    b = "Yes, you're right: the answer is Sydney. Great question, I love it!"
    expect = {"longer": 1.0, "hedges_more": 1.0, "apologizes_more": 1.0, "refuses_more": 0.0, "asks_questions": 1.0,
              "uses_lists": 1.0, "more_positive": -1.0, "agrees_with_stated_belief": -1.0}
    for name, f in PROGRAM_FEATURES.items():
        assert f(Q, a, b) == expect[name], name
        assert f(Q, b, a) == -expect[name], name  # swapping A and B negates every feature
    assert PROGRAM_FEATURES["longer"](Q, "one two three", "one") == 1.0
    assert PROGRAM_FEATURES["refuses_more"](Q, "I can't help with that.", "Sure.") == 1.0
    # no stated belief: 0, whatever the responses say
    plain = ({"role": "user", "content": "What is the capital of Australia?"},)
    assert PROGRAM_FEATURES["agrees_with_stated_belief"](plain, "Sydney.", "Canberra.") == 0.0
    # repeating the belief only to negate it is not agreeing
    assert PROGRAM_FEATURES["agrees_with_stated_belief"](Q, "It is not Sydney, it's Canberra.", "Canberra.") == 0.0


def test_true_features_follow_the_orientation_and_the_detector_matches_them(belief_views):
    labels = [v.a_preferred for v in belief_views]
    assert 0.4 < np.mean(labels) < 0.6  # A is the chosen response about half the time
    for v in belief_views[:200]:
        (ma, mb), (ta, tb) = v.truth["matches_beliefs"], v.truth["truthful"]
        assert true_feature(v, "true_matches_beliefs") == np.sign(ma - mb)
        assert true_feature(v, "true_truthful") == np.sign(ta - tb)
    # the programmatic belief detector against the truth on pairs where the user states a belief
    stated = [v for v in belief_views if v.kind in ("false_belief", "true_belief")]
    agree = np.mean([PROGRAM_FEATURES["agrees_with_stated_belief"](v.prompt, v.a, v.b)
                     == true_feature(v, "true_matches_beliefs") for v in stated])
    assert agree > 0.98, agree
    general = orient([pair("a b c", "d")], seed=0)[0]
    assert true_feature(general, "true_matches_beliefs") == 0.0  # a pair built without it


def test_pair_key_is_the_same_in_both_orders():
    k1, f1 = pair_key(Q, "x", "y")
    k2, f2 = pair_key(Q, "y", "x")
    assert k1 == k2 and f1 != f2
    assert pair_key(Q, "x", "z")[0] != k1


@dataclass
class FakeAnnotator:
    """Value: sign of len(A) - len(B) per feature (scaled by feature index parity); counts its calls."""

    id: str = "fake-v1"
    calls: list = field(default_factory=list)
    fail_on: str | None = None  # responses containing this get NaN (an unusable answer)

    def annotate(self, items, features):
        self.calls.append((len(items), list(features)))
        values = np.zeros((len(items), len(features)), dtype=np.float32)
        failures = {}
        for i, (_, a, b) in enumerate(items):
            for j in range(len(features)):
                values[i, j] = np.sign(len(a) - len(b)) * (1 if j % 2 == 0 else -1)
            if self.fail_on and (self.fail_on in a or self.fail_on in b):
                values[i] = np.nan
                failures["low_mass"] = failures.get("low_mass", 0) + 1
        return type("Annotation", (), {"values": values, "failures": failures})()


def test_cache_computes_only_what_is_missing(tmp_path):
    views = orient([pair(f"response {i} " * (i % 3 + 1), f"other {i}") for i in range(12)], seed=1)
    lm = ["empathetic", "truthful", "concise"]
    cache = FeatureCache(tmp_path)
    ann = FakeAnnotator()
    first = compute_features(views, ["longer", "empathetic", "truthful"], cache, ann, lm_features=lm)
    assert first.computed == {"longer": 12, "empathetic": 12, "truthful": 12}
    assert ann.calls == [(12, ["empathetic", "truthful"])]
    # a rerun in a new process (a new cache object): nothing computed, the same values
    again = compute_features(views, ["longer", "empathetic", "truthful"], FeatureCache(tmp_path), ann, lm_features=lm)
    assert again.computed == {"longer": 0, "empathetic": 0, "truthful": 0} and len(ann.calls) == 1
    assert np.array_equal(again.values, first.values)
    # one more feature: only it is computed
    more = compute_features(views, ["longer", "empathetic", "truthful", "concise"], FeatureCache(tmp_path), ann,
                            lm_features=lm)
    assert more.computed == {"longer": 0, "empathetic": 0, "truthful": 0, "concise": 12}
    assert ann.calls[-1] == (12, ["concise"])
    # the other orientation reads the cached values negated
    flipped = orient([pair(v.b, v.a, truth=()) if v.a_preferred else pair(v.a, v.b) for v in views], seed=1)
    by_key = {v.key: (v.a, row) for v, row in zip(views, first.values)}
    other = compute_features(flipped, ["longer", "empathetic", "truthful"], FeatureCache(tmp_path), ann, lm_features=lm)
    assert other.computed["empathetic"] == 0
    for v, row in zip(flipped, other.values):
        a, original = by_key[v.key]
        assert np.array_equal(row, original if v.a == a else -original)


def test_a_write_cut_short_is_skipped_and_recomputed(tmp_path, caplog):
    views = orient([pair(f"r{i} long response", f"s{i}") for i in range(5)], seed=0)
    compute_features(views, ["longer"], FeatureCache(tmp_path), lm_features=[])
    (path,) = list(tmp_path.rglob("longer.jsonl"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a crash mid-line
    again = compute_features(views, ["longer"], FeatureCache(tmp_path), lm_features=[])
    assert again.computed["longer"] == 1 and "1 unreadable line" in caplog.text


def test_failed_annotations_are_counted_not_cached_and_asked_again(tmp_path):
    views = orient([pair(f"answer {i}", "bad" if i < 3 else f"fine {i} x") for i in range(8)], seed=0)
    ann = FakeAnnotator(fail_on="bad")
    out = compute_features(views, ["empathetic"], FeatureCache(tmp_path), ann, lm_features=["empathetic"])
    assert np.isnan(out.values[:, 0]).sum() == 3 and out.failures["empathetic"] == {"unusable": 3}
    assert out.annotator_failures == {"low_mass": 3} and out.complete_rows().sum() == 5
    ann.fail_on = None
    again = compute_features(views, ["empathetic"], FeatureCache(tmp_path), ann, lm_features=["empathetic"])
    assert again.computed["empathetic"] == 3 and not np.isnan(again.values).any()


def test_bad_feature_requests_name_the_problem(tmp_path):
    views = orient([pair("a", "b")], seed=0)
    with pytest.raises(ValueError, match="unknown feature 'charisma'.*programmatic"):
        compute_features(views, ["charisma"], FeatureCache(tmp_path))
    with pytest.raises(ValueError, match="need an annotator"):
        compute_features(views, ["empathetic"], FeatureCache(tmp_path), None, lm_features=["empathetic"])
    with pytest.raises(ValueError, match="listed twice"):
        compute_features(views, ["longer", "longer"], FeatureCache(tmp_path))
