"""Best-of-n metrics with intervals: paired differences between selectors (exact small cases)."""

from __future__ import annotations

import numpy as np
import pytest

from syco.bon.estimate import ItemRecord, bootstrap_difference, bootstrap_metrics, expected_samples
from syco.bon.runner import compare_pairs


def _samples(values: list[float], dataset: str = "builtin") -> list[dict]:
    """One expected misconceptions sample per item: `refutes` = the truthful probability."""
    return [{"record": ItemRecord(dataset, "misconception", f"m{i}"), "index": 0,
             "verdicts": {"rules": {"refutes": v}}} for i, v in enumerate(values)]


def test_difference_is_the_difference_of_the_metrics():
    a, b = _samples([1.0, 0.0, 0.0, 0.5]), _samples([1.0, 1.0, 0.0, 0.5])
    d = bootstrap_difference("misconceptions", a, b, "rules", rounds=0)["builtin"]
    ma = bootstrap_metrics("misconceptions", a, "rules", rounds=0)["builtin"]
    mb = bootstrap_metrics("misconceptions", b, "rules", rounds=0)["builtin"]
    assert d["refutes"]["value"] == pytest.approx(ma["refutes"]["value"] - mb["refutes"]["value"]) == -0.25
    assert d["sycophantic"]["value"] == pytest.approx(0.25)
    assert "ci" not in d["refutes"]


def test_paired_interval_removes_the_item_variance():
    # b = a shifted by 0.1 on every item: the items vary widely, the difference not at all
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.8, size=40)
    a, b = _samples(list(base + 0.1)), _samples(list(base))
    d = bootstrap_difference("misconceptions", a, b, "rules", rounds=200, seed=1)["builtin"]["refutes"]
    assert d["value"] == pytest.approx(0.1)
    assert d["ci"] == pytest.approx([0.1, 0.1])
    separate = [bootstrap_metrics("misconceptions", s, "rules", rounds=200, seed=1)["builtin"]["refutes"]["ci"]
                for s in (a, b)]
    assert separate[0][0] < separate[1][1]  # the two separate intervals overlap


def test_identical_selectors_differ_by_exactly_zero():
    a = _samples([1.0, 0.0, 0.25, 0.75])
    d = bootstrap_difference("misconceptions", a, a, "rules", rounds=50)["builtin"]["sycophantic"]
    assert d["value"] == 0.0 and d["ci"] == [0.0, 0.0]


def test_compare_pairs():
    assert compare_pairs("auto", ["standard", "nonsyco", "prompted"], True) == [
        ("standard", "nonsyco"), ("standard", "prompted"), ("nonsyco", "prompted")]
    assert compare_pairs("none", ["a", "b"], True) == []
    assert compare_pairs([["a", "oracle"]], ["a", "b"], True) == [("a", "oracle")]
    with pytest.raises(ValueError, match=r"\['oracle'\] not among the selectors"):
        compare_pairs([["a", "oracle"]], ["a", "b"], False)
    with pytest.raises(ValueError, match="expected pairs"):
        compare_pairs(["a"], ["a", "b"], True)


def test_expected_samples_carry_every_answer_statistic():
    from types import SimpleNamespace

    rec = SimpleNamespace(key="k", dataset="d", template="suggest_incorrect", item_id="i1")
    verdicts = [{"correct": False, "adopts_incorrect": True}, {"correct": True, "adopts_incorrect": False},
                {"correct": False, "adopts_incorrect": None}]  # unknown adoption: left out of that pool only
    pools = [{"record": rec, "samples": [{"verdicts": {"rules": v}} for v in verdicts]}]
    scores = {"k": np.array([2.0, 1.0, 0.0])}
    one = expected_samples("answer", pools, scores, "rules", 1)[0]["verdicts"]["rules"]
    assert one["correct"] == pytest.approx(1 / 3) and one["adopts_incorrect"] == pytest.approx(1 / 2)
    top = expected_samples("answer", pools, scores, "rules", 2)[0]["verdicts"]["rules"]
    # best of 2 from 3 picks sample 0 unless the pair is (1, 2): correct 1/3, adoption (of 2 known) 1
    assert top["correct"] == pytest.approx(1 / 3) and top["adopts_incorrect"] == pytest.approx(1.0)
    assert expected_samples("answer", pools, scores, "rules", 3)[0]["verdicts"]["rules"]["adopts_incorrect"] is None
