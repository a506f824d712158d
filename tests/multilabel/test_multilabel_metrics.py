"""Multi-label metrics and threshold tuning, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from imgcls.metrics import multilabel_metrics, tune_thresholds


def _data(seed: int, n: int = 300, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, c)) < 0.3).astype(int)
    truth[:10] = 0  # images with no label at all
    truth[:, c - 1] = 0  # a label absent from the data
    scores = np.clip(truth * 0.35 + rng.random((n, c)) * 0.65, 0, 1)
    return np.round(scores, 3), truth


@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_metrics_match_scikit_learn(seed: int) -> None:
    scores, truth = _data(seed)
    thresholds = [0.4, 0.5, 0.55, 0.6, 0.5]
    m = multilabel_metrics(torch.from_numpy(scores), torch.from_numpy(truth), list("abcde"), thresholds)
    pred = (scores >= np.array(thresholds)).astype(int)
    for c in range(4):
        assert m["per_class"][c]["ap"] == pytest.approx(
            skm.average_precision_score(truth[:, c], scores[:, c]), abs=1e-6
        )
    assert m["per_class"][4]["ap"] is None and m["absent_classes"] == ["e"]
    assert m["map"]["macro"] == pytest.approx(
        np.mean([skm.average_precision_score(truth[:, c], scores[:, c]) for c in range(4)]), abs=1e-6
    )
    assert m["map"]["micro"] == pytest.approx(skm.average_precision_score(truth, scores, average="micro"), abs=1e-6)
    p, r, f, s = skm.precision_recall_fscore_support(truth, pred, zero_division=0)
    for c in range(5):
        row = m["per_class"][c]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (p[c], r[c], f[c], s[c]), abs=1e-6
        )
    for avg in ("macro", "micro"):
        p, r, f, _ = skm.precision_recall_fscore_support(truth, pred, average=avg, zero_division=0)
        assert (m[avg]["precision"], m[avg]["recall"], m[avg]["f1"]) == pytest.approx((p, r, f), abs=1e-6)
    assert m["example_f1"] == pytest.approx(skm.f1_score(truth, pred, average="samples", zero_division=1.0), abs=1e-6)
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, pred), abs=1e-6)
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(truth, pred), abs=1e-6)
    assert m["label_cardinality"]["true"] == pytest.approx(truth.sum(1).mean())
    assert m["label_cardinality"]["predicted"] == pytest.approx(pred.sum(1).mean())


def test_thresholds_maximise_f1_or_reach_the_target_precision() -> None:
    scores, truth = _data(3)
    s, t = torch.from_numpy(scores), torch.from_numpy(truth)
    tuned = tune_thresholds(s, t)
    assert tuned[4] == 0.5  # no positives: the default stays
    for c in range(4):
        best = max(skm.f1_score(truth[:, c], scores[:, c] >= x, zero_division=0) for x in np.unique(scores[:, c]))
        assert skm.f1_score(truth[:, c], scores[:, c] >= tuned[c], zero_division=0) == pytest.approx(best, abs=1e-9)
    strict = tune_thresholds(s, t, target_precision=0.9)
    for c in range(4):
        hit = scores[:, c] >= strict[c]
        assert skm.precision_score(truth[:, c], hit, zero_division=0) >= 0.9
        lower = scores[:, c][scores[:, c] < strict[c]]
        if len(lower):  # the next lower threshold would fall below the target: most recall at the target
            assert skm.precision_score(truth[:, c], scores[:, c] >= lower.max(), zero_division=0) < 0.9
