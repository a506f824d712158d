"""Every evaluation number equals scikit-learn's on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from imgcls.metrics import classification_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes, n = 7, 300
    targets = rng.integers(0, num_classes - 1, size=n)  # the last class never occurs: zero-support edge case
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), targets] += rng.uniform(0, 2.5, size=n)  # a model that is right often, not always
    probs = torch.from_numpy(logits).softmax(-1)
    labels = [f"c{i}" for i in range(num_classes)]
    m = classification_metrics(probs, torch.from_numpy(targets), labels)
    preds = logits.argmax(1)
    all_labels = list(range(num_classes))

    assert m["top1"] == pytest.approx(skm.accuracy_score(targets, preds), abs=1e-6)
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(targets, logits, k=5, labels=all_labels), abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(targets, preds), abs=1e-6)
    p, r, f, s = skm.precision_recall_fscore_support(targets, preds, labels=all_labels, zero_division=0)
    for i, row in enumerate(m["per_class"]):
        assert row["precision"] == pytest.approx(p[i], abs=1e-6)
        assert row["recall"] == pytest.approx(r[i], abs=1e-6)
        assert row["f1"] == pytest.approx(f[i], abs=1e-6)
        assert row["support"] == s[i]
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            targets, preds, labels=all_labels, average=avg, zero_division=0
        )
        assert m[avg]["precision"] == pytest.approx(p, abs=1e-6), avg
        assert m[avg]["recall"] == pytest.approx(r, abs=1e-6), avg
        assert m[avg]["f1"] == pytest.approx(f, abs=1e-6), avg
    assert m["confusion_matrix"] == skm.confusion_matrix(targets, preds, labels=all_labels).tolist()
