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


def _predictions(seed: int, n: int = 400, num_classes: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes - 1, size=n)  # the last class is absent
    logits = rng.normal(size=(n, num_classes)) * 1.5
    logits[np.arange(n), targets] += rng.uniform(0, 3, size=n)
    logits = np.round(logits, 1)  # ties in the scores, as real low-precision outputs have
    probs = torch.from_numpy(logits).softmax(-1).numpy()
    return logits, probs, targets


@pytest.mark.parametrize("seed", [0, 1])
def test_curves_ap_auc_and_calibration_match_scikit_learn(seed: int) -> None:
    from sklearn.calibration import calibration_curve
    from sklearn.preprocessing import label_binarize

    from imgcls.metrics import evaluation_metrics

    logits, probs, targets = _predictions(seed)
    labels = ["a", "b", "向日葵", "bird (small)", "e", "absent"]
    m = evaluation_metrics(torch.from_numpy(probs), torch.from_numpy(targets), labels)
    onehot = label_binarize(targets, classes=list(range(6)))
    for c, row in enumerate(m["per_class"]):
        if c == 5:
            assert row["ap"] is None and row["auc"] is None
            continue
        assert row["ap"] == pytest.approx(skm.average_precision_score(onehot[:, c], probs[:, c]), abs=1e-6)
        assert row["auc"] == pytest.approx(skm.roc_auc_score(onehot[:, c], probs[:, c]), abs=1e-6)
    present = list(range(5))
    assert m["absent_classes"] == ["absent"]
    assert m["ap"]["macro"] == pytest.approx(
        np.mean([skm.average_precision_score(onehot[:, c], probs[:, c]) for c in present]), abs=1e-6
    )
    assert m["ap"]["micro"] == pytest.approx(skm.average_precision_score(onehot, probs, average="micro"), abs=1e-6)
    # With the absent class dropped, scikit-learn's one-vs-rest macro AUC is the same number.
    assert m["auc"]["macro"] == pytest.approx(skm.roc_auc_score(onehot[:, :5], probs[:, :5], average="macro"), abs=1e-6)
    cm = skm.confusion_matrix(targets, probs.argmax(1), labels=list(range(6)), normalize="true")
    np.testing.assert_allclose(np.array(m["confusion_matrix_normalized"]), np.nan_to_num(cm), atol=1e-9)

    # The PR and ROC curves are scikit-learn's, thinned to at most 200 evenly spaced points.
    def thin(a: np.ndarray) -> np.ndarray:
        return a if len(a) <= 200 else a[np.unique(np.round(np.linspace(0, len(a) - 1, 200)).astype(int))]

    p, r, _ = skm.precision_recall_curve(onehot[:, 2], probs[:, 2])
    np.testing.assert_allclose(m["curves"]["pr"]["向日葵"]["precision"], thin(p), atol=1e-6)
    np.testing.assert_allclose(m["curves"]["pr"]["向日葵"]["recall"], thin(r), atol=1e-6)
    fpr, tpr, _ = skm.roc_curve(onehot[:, 2], probs[:, 2], drop_intermediate=False)
    np.testing.assert_allclose(m["curves"]["roc"]["向日葵"]["fpr"], thin(fpr), atol=1e-6)
    np.testing.assert_allclose(m["curves"]["roc"]["向日葵"]["tpr"], thin(tpr), atol=1e-6)
    # ECE from scikit-learn's reliability bins (equal width), weighted by the samples in each bin.
    confidence, correct = probs.max(1), (probs.argmax(1) == targets).astype(int)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.array([b["count"] for b in m["calibration"]["bins"] if b["count"]])
    expected = np.sum(np.abs(prob_true - prob_pred) * counts) / len(targets)
    assert m["calibration"]["ece"] == pytest.approx(expected, abs=1e-6)
    assert sum(b["count"] for b in m["calibration"]["bins"]) == len(targets)


def test_temperature_fit_minimises_the_log_loss() -> None:
    from imgcls.metrics import fit_temperature

    logits, _, targets = _predictions(3)
    overconfident = torch.from_numpy(logits * 4)
    t = fit_temperature(overconfident, torch.from_numpy(targets))
    assert t > 1.5  # it cools an overconfident model down

    def nll(temperature: float) -> float:
        return skm.log_loss(targets, (overconfident / temperature).softmax(-1).numpy(), labels=list(range(6)))

    grid = np.linspace(0.5, 10, 400)
    best = grid[np.argmin([nll(g) for g in grid])]
    assert nll(t) <= nll(best) + 1e-6


def test_confused_pairs_come_from_the_confusion_matrix() -> None:
    from imgcls.metrics import confused_pairs

    cm = torch.tensor([[5, 3, 0], [1, 7, 0], [0, 4, 2]])
    pairs = confused_pairs(cm, ["x", "y", "z"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("z", "y", 4), ("x", "y", 3), ("y", "x", 1)]
    assert pairs[0]["rate"] == pytest.approx(4 / 6)
