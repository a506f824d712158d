"""The evaluation report for multi-label models: the same self-contained page, with multi-label numbers.

It reuses the single-label report's style, figure embedding and precision-recall plot; what differs is the
summary (mAP, example-based F1, Hamming loss, subset accuracy, label cardinality) and the per-class table
(AP and precision/recall/F1 at each class's tuned threshold).
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

from imgcls.report import _CSS, DPI, _e, _f1_colour, _figure, _num, _pct, plot_pr_curves


def write_multilabel_report(out_dir: str | Path, metrics: dict, *, title: str = "imgcls evaluation") -> Path:
    """Write `report.html` and `pr_curves.png` for a multi-label evaluation; returns the html path."""
    import matplotlib

    from imgcls._fonts import cjk_rc_params

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(cjk_rc_params()):
        fig = plot_pr_curves({**metrics, "ap": {"micro": metrics["map"]["micro"]}})
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    png = buf.getvalue()
    (out / "pr_curves.png").write_bytes(png)
    path = out / "report.html"
    path.write_text(render_multilabel_html(metrics, png, title=title), encoding="utf-8")
    return path


def render_multilabel_html(metrics: dict, pr_png: bytes | None, *, title: str) -> str:
    model = metrics.get("model") or {}
    meta = []
    if model.get("architecture"):
        meta.append(f"Model: <b>{_e(model['architecture'])}</b> <code>{_e(model.get('path', ''))}</code>")
    if metrics.get("data"):
        meta.append(f"Data: <code>{_e(metrics['data'])}</code>")
    meta.append(f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M')}")
    card = metrics["label_cardinality"]
    summary_rows = [
        ("Images", f"{metrics['num_samples']:,}", "evaluated"),
        (
            "mAP (macro)",
            _num(metrics["map"]["macro"]),
            "mean over labels of the area under each precision-recall curve",
        ),
        ("mAP (micro)", _num(metrics["map"]["micro"]), "the same over all (image, label) pairs"),
        ("Macro F1", _num(metrics["macro"]["f1"]), "at the tuned thresholds, every label counts the same"),
        ("Micro F1", _num(metrics["micro"]["f1"]), "at the tuned thresholds, every decision counts the same"),
        ("Example-based F1", _num(metrics["example_f1"]), "F1 of each image's label set, averaged over images"),
        ("Hamming loss", _num(metrics["hamming_loss"], 4), "share of (image, label) decisions that are wrong"),
        ("Subset accuracy", _pct(metrics["subset_accuracy"]), "images whose whole label set is exactly right"),
        ("Labels per image", f"{card['true']:.2f} true / {card['predicted']:.2f} predicted", "label cardinality"),
    ]
    summary = "\n".join(
        f'<tr><th>{_e(k)}</th><td class="num">{v}</td><td class="note">{_e(n)}</td></tr>' for k, v, n in summary_rows
    )
    rows = sorted(metrics["per_class"], key=lambda r: (r["ap"] if r["ap"] is not None else 2.0, r["label"]))
    per_class = "\n".join(
        f"<tr{' class=absent' if r['support'] == 0 else ''}><td>{_e(r['label'])}</td>"
        f'<td class="num">{_num(r["ap"])}</td><td class="num">{_num(r["precision"])}</td>'
        f'<td class="num">{_num(r["recall"])}</td>'
        f'<td class="num" style="background:{_f1_colour(r["f1"])}">{_num(r["f1"])}</td>'
        f'<td class="num">{_num(r["threshold"])}</td><td class="num">{r["support"]:,}</td></tr>'
        for r in rows
    )
    warnings = ""
    if metrics.get("absent_classes"):
        warnings = (
            '<div class="warnings"><p><b>Labels with no positive image</b> in this data (AP cannot be measured): '
            f"{_e(', '.join(metrics['absent_classes']))}</p></div>"
        )
    body = f"""<header><h1>{_e(title)}</h1><p class="meta">{" · ".join(meta)}</p></header>
<section id="summary"><h2>Summary (multi-label)</h2>{warnings}<table>{summary}</table></section>
<section id="per-class"><h2>Per label</h2>
<p class="note">Worst AP first. Precision, recall and F1 are at each label's threshold, tuned on validation images.</p>
<table><tr><th>Label</th><th class="num">AP</th><th class="num">Precision</th><th class="num">Recall</th>
<th class="num">F1</th><th class="num">Threshold</th><th class="num">Positives</th></tr>
{per_class}</table></section>
<section id="curves"><h2>Precision-recall curves</h2>
<p class="note">One curve per label; the dashed line is the micro average over all (image, label) pairs.</p>
{_figure(pr_png, "Precision-recall curves")}</section>"""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
