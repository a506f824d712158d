"""Turn the metrics of an evaluation into a report a person reads.

:func:`write_report` answers "can I trust this model, and where does it fail?" with one self-contained
``report.html`` (every image embedded as a data URI, no external CSS, scripts or fonts, so it opens
from disk and can be mailed around) and the plots as PNG files next to it.

matplotlib is imported inside the functions that draw, so ``import imgcls.report`` stays cheap, and
plots are drawn on ``matplotlib.figure.Figure`` objects rather than through pyplot, so the report
neither needs a display nor touches pyplot's global state or the user's rc settings.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOT_FILES", "render_html", "render_plots", "write_report"]

PLOT_FILES: tuple[str, ...] = ("confusion_matrix", "pr_curves", "roc_curves", "reliability")
"""The plots :func:`write_report` writes, as ``<name>.png``, in the order the page shows them."""

DPI = 110
THUMBNAIL_PX = 128
JPEG_QUALITY = 85
# Above this many classes the confusion matrix cells are too small for numbers.
MAX_ANNOTATED_CLASSES = 25
# Above this many classes tick labels overlap even at the smallest readable size, so they are left out.
MAX_TICK_LABELS = 100
# Curves drawn in colour with a legend entry; the other classes are drawn thin and grey.
MAX_LEGEND_CLASSES = 10
# Long class names are shortened on plot axes and legends (the tables show them in full).
MAX_PLOT_LABEL_CHARS = 28
MAX_LISTED_SKIPPED = 100
DASH = "—"  # what the tables show for a value that cannot be measured


def write_report(out_dir: str | Path, metrics: dict, *, title: str = "imgcls evaluation") -> Path:
    """Write the HTML report and its plots for one evaluation.

    Args:
        out_dir: Folder to write into; created when missing. Existing report files are replaced.
        metrics: The evaluation metrics, as produced by ``imgcls.evaluation`` (labels, per-class rows,
            confusion matrix, curves, calibration, confused pairs, mistakes ...).
        title: The page title and main heading.

    Returns:
        The path of ``out_dir/report.html``. Next to it: ``confusion_matrix.png``, ``pr_curves.png``,
        ``roc_curves.png`` and ``reliability.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = render_plots(metrics)
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    path = out / "report.html"
    path.write_text(render_html(metrics, plots, title=title), encoding="utf-8")
    return path


def render_plots(metrics: dict) -> dict[str, bytes]:
    """Draw every plot of the report.

    Args:
        metrics: The evaluation metrics (see :func:`write_report`).

    Returns:
        PNG bytes by plot name, for each name in :data:`PLOT_FILES`.
    """
    import matplotlib

    from imgcls._fonts import cjk_rc_params

    drawers: dict[str, Callable[[dict], Figure]] = {
        "confusion_matrix": plot_confusion_matrix,
        "pr_curves": plot_pr_curves,
        "roc_curves": plot_roc_curves,
        "reliability": plot_reliability,
    }
    plots: dict[str, bytes] = {}
    # Fonts are looked up when the figure is drawn, so saving happens inside the same rc context.
    with matplotlib.rc_context(cjk_rc_params()):
        for name in PLOT_FILES:
            fig = drawers[name](metrics)
            buf = io.BytesIO()
            # No "Software" chunk: the file then holds no URL and does not change with the matplotlib version.
            fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
            plots[name] = buf.getvalue()
    return plots


# ---------------------------------------------------------------------------------------------- plots


def plot_confusion_matrix(metrics: dict) -> Figure:
    """Heat map of the confusion matrix, coloured by the share of each true class (row).

    Args:
        metrics: The evaluation metrics; uses ``labels``, ``confusion_matrix`` and
            ``confusion_matrix_normalized``.

    Returns:
        The figure.
    """
    import numpy as np
    from matplotlib.figure import Figure

    labels = list(metrics.get("labels") or [])
    n = len(labels)
    if n == 0:
        return _empty_figure("Confusion matrix", "no classes in the metrics")
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64).reshape(n, n)
    shares = metrics.get("confusion_matrix_normalized")
    if shares is None:
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    shares = np.asarray(shares, dtype=float).reshape(n, n)

    # About 0.4 inch per class keeps counts readable; capped so 1,000 classes still make a sane PNG.
    side = min(max(5.0, 0.42 * n + 3.0), 16.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest" if n <= 200 else "antialiased")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    # A big figure is shown scaled down on the page; larger headings keep it readable there.
    heading_size = 10 if side <= 9 else 14
    colorbar.set_label("share of the true class (row)", fontsize=heading_size)

    if n <= MAX_TICK_LABELS:
        tick_size = 10 if n <= 15 else 8 if n <= 40 else 6
        short = [_shorten(label) for label in labels]
        ax.set_xticks(range(n), short, rotation=45, ha="right", rotation_mode="anchor", fontsize=tick_size)
        ax.set_yticks(range(n), short, fontsize=tick_size)
        for i, tick in enumerate(ax.get_yticklabels()):
            if counts[i].sum() == 0:
                tick.set_color("#999999")  # a class without images: its empty row is not a failure
        ax.set_xlabel("Predicted class", fontsize=heading_size)
        ax.set_ylabel("True class", fontsize=heading_size)
    else:
        ax.set_xlabel(f"Predicted class (0 … {n - 1}, in label order)", fontsize=heading_size)
        ax.set_ylabel(f"True class (0 … {n - 1}, in label order)", fontsize=heading_size)

    title = "Confusion matrix"
    if n <= MAX_ANNOTATED_CLASSES:
        cell_size = 10 if n <= 10 else 8 if n <= 18 else 6.5
        for i in range(n):
            for j in range(n):
                if counts[i, j] == 0:
                    continue  # empty cells stay blank, so the eye goes to the cells that hold images
                colour = "white" if shares[i, j] > 0.55 else "#1a1a1a"
                ax.text(j, i, f"{counts[i, j]:,}", ha="center", va="center", color=colour, fontsize=cell_size)
        title += " (numbers = image counts)"
    ax.set_title(title, fontsize=heading_size + 2)
    return fig


def plot_pr_curves(metrics: dict) -> Figure:
    """One-vs-rest precision-recall curves, one line per class, with the micro-averaged curve dashed.

    Args:
        metrics: The evaluation metrics; uses ``curves["pr"]``, ``curves["pr_micro"]``, the per-class
            ``ap`` and ``ap["micro"]``.

    Returns:
        The figure.
    """
    curves = (metrics.get("curves") or {}).get("pr") or {}
    ap = {row["label"]: row.get("ap") for row in metrics.get("per_class") or []}
    micro = (metrics.get("curves") or {}).get("pr_micro")
    micro_ap = (metrics.get("ap") or {}).get("micro")
    if not curves and not micro:
        return _empty_figure("Precision-recall curves", "no class with images in the data")
    series = {label: (c["recall"], c["precision"]) for label, c in curves.items()}
    extra = None
    if micro:
        extra = (micro["recall"], micro["precision"], f"micro average (AP {_num(micro_ap)})")
    return _curve_figure(
        title="Precision-recall (one class vs. the rest)",
        xlabel="Recall",
        ylabel="Precision",
        series=series,
        scores=ap,
        score_name="AP",
        extra=extra,
        diagonal=False,
        legend_loc="lower left",
    )


def plot_roc_curves(metrics: dict) -> Figure:
    """One-vs-rest ROC curves, one line per class, with the chance diagonal.

    Args:
        metrics: The evaluation metrics; uses ``curves["roc"]`` and the per-class ``auc``.

    Returns:
        The figure.
    """
    curves = (metrics.get("curves") or {}).get("roc") or {}
    if not curves:
        return _empty_figure("ROC curves", "no class with images in the data")
    auc = {row["label"]: row.get("auc") for row in metrics.get("per_class") or []}
    series = {label: (c["fpr"], c["tpr"]) for label, c in curves.items()}
    macro = (metrics.get("auc") or {}).get("macro")
    return _curve_figure(
        title=f"ROC (one class vs. the rest), macro AUC {_num(macro)}",
        xlabel="False positive rate",
        ylabel="True positive rate (recall)",
        series=series,
        scores=auc,
        score_name="AUC",
        extra=None,
        diagonal=True,
        legend_loc="lower right",
    )


def plot_reliability(metrics: dict) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the bin counts below.

    Args:
        metrics: The evaluation metrics; uses ``calibration`` (``bins``, ``ece``, ``temperature``).

    Returns:
        The figure.
    """
    from matplotlib.figure import Figure

    calibration = metrics.get("calibration") or {}
    bins = [b for b in calibration.get("bins") or [] if b.get("count")]
    if not bins:
        return _empty_figure("Reliability diagram", "no calibration bins in the metrics")

    fig = Figure(figsize=(7.0, 7.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lowers = [b["lower"] for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    confidence = [b["confidence"] if b["confidence"] is not None else (b["lower"] + b["upper"]) / 2 for b in bins]

    top.bar(lowers, accuracy, width=widths, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
    # The gap between what the model claims (mean confidence) and what it achieves, per bin.
    gaps = [c - a for c, a in zip(confidence, accuracy, strict=True)]
    top.bar(
        lowers,
        gaps,
        bottom=accuracy,
        width=widths,
        align="edge",
        # Unfilled, so where the gap lies inside an accuracy bar (underconfident) the bar stays visible.
        facecolor="none",
        edgecolor="#c44e52",
        linewidth=1.0,
        hatch="///",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="#333333", linewidth=1.2, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    top.legend(loc="upper left", fontsize=9)
    title = f"Reliability diagram, ECE {_num(calibration.get('ece'))}"
    if calibration.get("temperature") is not None:
        title += f" (temperature {calibration['temperature']:.3g})"
    top.set_title(title)

    bottom.bar(lowers, [b["count"] for b in bins], width=widths, align="edge", color="#8c8c8c", edgecolor="white")
    bottom.set_xlabel("Confidence (top-1 score)")
    bottom.set_ylabel("Images")
    return fig


def _curve_figure(
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    scores: dict[str, float | None],
    score_name: str,
    extra: tuple[Sequence[float], Sequence[float], str] | None,
    diagonal: bool,
    legend_loc: str,
) -> Figure:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    # The worst classes are the ones a reader needs to find; with many classes only they get colour.
    ordered = sorted(series, key=lambda label: (_sort_score(scores.get(label)), label))
    highlighted = ordered[:MAX_LEGEND_CLASSES]
    rest = ordered[MAX_LEGEND_CLASSES:]

    many = bool(rest)
    fig = Figure(figsize=(9.0, 6.0) if many else (7.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    for label in rest:
        x, y = series[label]
        ax.plot(x, y, color="#c8c8c8", linewidth=0.7, zorder=1)
    colours = _palette(len(highlighted))
    for label, colour in zip(highlighted, colours, strict=True):
        x, y = series[label]
        ax.plot(
            x,
            y,
            color=colour,
            linewidth=1.6,
            zorder=2,
            label=f"{_shorten(label)} ({score_name} {_num(scores.get(label))})",
        )
    if extra is not None:
        ax.plot(extra[0], extra[1], color="black", linestyle="--", linewidth=2.0, zorder=3, label=extra[2])
    if diagonal:
        ax.plot([0, 1], [0, 1], color="#888888", linestyle=":", linewidth=1.0, zorder=0, label="chance")

    handles, texts = ax.get_legend_handles_labels()
    if rest:
        handles.append(Line2D([], [], color="#c8c8c8", linewidth=0.7))
        texts.append(f"{len(rest)} other classes")
        title += f"\n{len(highlighted)} lowest-{score_name} of {len(series)} classes in colour"
    if many:
        # Eleven-plus entries cover the curves inside the axes; outside, the plot stays readable.
        fig.legend(handles, texts, loc="outside right upper", fontsize=9, frameon=False)
    else:
        ax.legend(handles, texts, loc=legend_loc, fontsize=9.5, framealpha=0.9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, color="#eeeeee", linewidth=0.8)
    return fig


def _empty_figure(title: str, message: str) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 2.5), layout="constrained")
    ax: Axes = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#666666", transform=ax.transAxes)
    return fig


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _sort_score(value: float | None) -> float:
    # Unknown scores sort last: a class without a measurable AP is not the most urgent one to look at.
    return math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _shorten(label: str, limit: int = MAX_PLOT_LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------- html


def render_html(metrics: dict, plots: dict[str, bytes], *, title: str = "imgcls evaluation") -> str:
    """Build the self-contained report page.

    Args:
        metrics: The evaluation metrics (see :func:`write_report`).
        plots: PNG bytes by plot name, as from :func:`render_plots`; embedded as they are.
        title: The page title and main heading.

    Returns:
        The HTML document.
    """
    sections = [
        _header(metrics, title),
        _summary(metrics),
        _per_class(metrics),
        _plot_section("confusion", "Confusion matrix", plots.get("confusion_matrix"), _confusion_note(metrics)),
        _curves_section(plots),
        _plot_section("calibration", "Calibration", plots.get("reliability"), _CALIBRATION_NOTE),
        _confused_pairs(metrics),
        _mistakes(metrics),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


_CSS = """
body { margin: 0; background: #f6f7f9; color: #1d2329;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "WenQuanYi Micro Hei",
  "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ea; font-size: 20px; }
h3 { margin: 20px 0 6px; font-size: 16px; }
nav { margin: 10px 0 0; font-size: 14px; }
nav a { margin-right: 14px; color: #2f5f98; text-decoration: none; }
.meta { color: #5a6570; font-size: 14px; }
.note { color: #5a6570; font-size: 14px; max-width: 880px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e8eb; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.absent td { color: #8a939c; font-style: italic; }
.tag { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 8px; background: #e6e8eb;
  color: #5a6570; font-size: 12px; font-style: normal; }
.glance { margin: 0 0 14px; padding-left: 20px; max-width: 880px; font-size: 16px; }
.glance li { margin-bottom: 4px; }
.warnings { margin: 16px 0; padding: 10px 14px; border-left: 4px solid #e0a100; background: #fff8e1; }
.warnings p { margin: 4px 0; }
.warnings ul { margin: 4px 0; padding-left: 20px; max-height: 240px; overflow: auto; font-size: 13px; }
figure.plot { margin: 10px 0; }
figure.plot img { display: block; max-width: 100%; height: auto; border: 1px solid #eceef1; }
.curves { display: flex; flex-wrap: wrap; gap: 16px; }
.curves figure.plot { flex: 1 1 520px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 14px; }
.card { margin: 0; padding: 8px; border: 1px solid #e3e6ea; border-radius: 6px; font-size: 13px;
  overflow-wrap: anywhere; }
.thumb { display: flex; align-items: center; justify-content: center; width: 100%; height: 132px;
  background: #f0f2f5; border-radius: 4px; }
.thumb img { max-width: 128px; max-height: 128px; }
.placeholder { color: #8a939c; font-size: 12px; text-align: center; padding: 6px; }
.card .true { color: #1e7b34; }
.card .pred { color: #b3261e; }
.card .path { color: #8a939c; font-size: 11px; }
"""

_CALIBRATION_NOTE = (
    "Images are binned by the model's top-1 score. A well calibrated model is right 80% of the time when it says "
    "0.8: its bars reach the diagonal. Bars below the diagonal mean the scores are overconfident. "
    "ECE is the image-weighted mean gap between score and accuracy."
)


def _header(metrics: dict, title: str) -> str:
    parts = []
    model = metrics.get("model") or {}
    if model.get("architecture") or model.get("path"):
        arch = _e(model.get("architecture") or "model")
        parts.append(f"Model: <b>{arch}</b>" + (f" <code>{_e(model['path'])}</code>" if model.get("path") else ""))
    if metrics.get("data"):
        parts.append(f"Data: <code>{_e(metrics['data'])}</code>")
    parts.append(f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M')}")
    links = [
        ("summary", "Summary"),
        ("per-class", "Per class"),
        ("confusion", "Confusion matrix"),
        ("curves", "PR / ROC"),
        ("calibration", "Calibration"),
        ("confused-pairs", "Confused pairs"),
        ("mistakes", "Mistakes"),
    ]
    nav = " ".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in links)
    return f'<header>\n<h1>{_e(title)}</h1>\n<p class="meta">{" · ".join(parts)}</p>\n<nav>{nav}</nav>\n</header>'


def _summary(metrics: dict) -> str:
    calibration = metrics.get("calibration") or {}
    ap = metrics.get("ap") or {}
    auc = metrics.get("auc") or {}
    rows: list[tuple[str, str, str]] = [
        ("Images", f"{metrics.get('num_samples', 0):,}", "evaluated"),
        ("Top-1 accuracy", _pct(metrics.get("top1")), "the highest score is the true class"),
        ("Top-5 accuracy", _pct(metrics.get("top5")), "the true class is among the 5 highest scores"),
        ("Balanced accuracy", _pct(metrics.get("balanced_accuracy")), "mean recall over classes present"),
        ("Macro F1", _num(_get(metrics, "macro", "f1")), "every class counts the same"),
        ("Micro F1", _num(_get(metrics, "micro", "f1")), "every image counts the same"),
        ("Weighted F1", _num(_get(metrics, "weighted", "f1")), "classes weighted by their image count"),
        ("Macro AP", _num(ap.get("macro")), "area under the precision-recall curve, mean over classes"),
        ("Micro AP", _num(ap.get("micro")), "the same over all (image, class) pairs"),
        ("Macro AUC", _num(auc.get("macro")), "area under the ROC curve, mean over classes"),
        ("ECE", _num(calibration.get("ece")), "expected calibration error: 0 when scores match accuracy"),
    ]
    if calibration.get("temperature") is not None:
        rows.append(("Temperature", f"{calibration['temperature']:.3g}", "scores were calibrated by this temperature"))
    if calibration.get("ece_before") is not None:
        rows.append(("ECE before scaling", _num(calibration["ece_before"]), "the same images without the temperature"))
    table = "\n".join(
        f'<tr><th scope="row">{name}</th><td class="num">{value}</td><td class="note">{hint}</td></tr>'
        for name, value, hint in rows
    )
    glance = "".join(f"<li>{item}</li>" for item in _at_a_glance(metrics))
    # The plain-words answer comes first; the table backs it up.
    return (
        '<section id="summary">\n<h2>Summary</h2>\n'
        f'<ul class="glance">{glance}</ul>\n{_warnings(metrics)}'
        f'<table class="summary">\n{table}\n</table>\n</section>'
    )


def _at_a_glance(metrics: dict) -> list[str]:
    """A few plain sentences that point a reader at what matters most; every value is escaped HTML."""
    items = []
    if metrics.get("top1") is not None:
        items.append(
            f"Right first time on <b>{_pct(metrics['top1'])}</b> of {metrics.get('num_samples', 0):,} images "
            f"({_pct(metrics.get('balanced_accuracy'))} when every class counts the same)."
        )
    weak = [row for row in _sorted_rows(metrics) if row.get("support")][:3]
    if weak:
        names = ", ".join(f"{_e(row['label'])} (F1 {_num(row['f1'])})" for row in weak)
        items.append(f"Weakest classes: {names}.")
    pairs = metrics.get("confused_pairs") or []
    if pairs:
        p = pairs[0]
        items.append(
            f"Most frequent confusion: <b>{_e(p['true'])}</b> taken for <b>{_e(p['predicted'])}</b>, "
            f"{p['count']:,} times ({_pct(p.get('rate'))} of {_e(p['true'])})."
        )
    calibration = metrics.get("calibration") or {}
    bins = [b for b in calibration.get("bins") or [] if b.get("count") and b.get("confidence") is not None]
    total = sum(b["count"] for b in bins)
    if total and calibration.get("ece") is not None:
        # Signed mean gap: positive when the scores claim more than the accuracy delivers.
        gap = sum(b["count"] * (b["confidence"] - (b["accuracy"] or 0.0)) for b in bins) / total
        ece = calibration["ece"]
        if ece < 0.03:
            items.append(f"Scores are well calibrated (ECE {_num(ece)}): a score of 0.9 means about 90% right.")
        else:
            way = "overconfident" if gap > 0 else "underconfident"
            scaled = " even after temperature scaling" if calibration.get("temperature") is not None else ""
            items.append(
                f"Scores are <b>{way}</b>{scaled} by {abs(gap) * 100:.1f} points on average (ECE {_num(ece)}); "
                "read them as a ranking, not as probabilities."
            )
    return items


def _warnings(metrics: dict) -> str:
    notes = []
    absent = metrics.get("absent_classes") or []
    if absent:
        names = ", ".join(_e(label) for label in absent)
        notes.append(
            f"<p><b>{len(absent)} class{'es have' if len(absent) > 1 else ' has'} no images</b> in this data, so "
            f"their recall, AP and AUC cannot be measured: {names}.</p>"
        )
    skipped = metrics.get("skipped_files") or []
    if skipped:
        listed = "".join(f"<li><code>{_e(path)}</code></li>" for path in skipped[:MAX_LISTED_SKIPPED])
        more = f"<li>… and {len(skipped) - MAX_LISTED_SKIPPED:,} more</li>" if len(skipped) > MAX_LISTED_SKIPPED else ""
        notes.append(
            f"<p><b>{len(skipped):,} file{'s' if len(skipped) > 1 else ''} could not be read</b> and "
            f"{'were' if len(skipped) > 1 else 'was'} left out of every number in this report:</p><ul>{listed}{more}</ul>"
        )
    if not notes:
        return ""
    return f'<div class="warnings" role="note">{"".join(notes)}</div>\n'


def _sorted_rows(metrics: dict) -> list[dict]:
    """Per-class rows, worst F1 first; classes absent from the data go last (their F1 says nothing)."""
    rows = list(metrics.get("per_class") or [])
    return sorted(rows, key=lambda r: (not r.get("support"), r.get("f1") or 0.0, r.get("recall") or 0.0, r["label"]))


def _per_class(metrics: dict) -> str:
    predicted = _predicted_counts(metrics)
    body = []
    for row in _sorted_rows(metrics):
        absent = not row.get("support")
        label = _e(row["label"]) + ('<span class="tag">absent</span>' if absent else "")
        f1 = row.get("f1")
        style = "" if absent or f1 is None else f' style="background:{_f1_colour(f1)}"'
        # An absent class still has a precision when the model predicted it (0: every such guess was wrong).
        precision = DASH if absent and not predicted.get(row["label"]) else _num(row.get("precision"))
        cells = [
            f"<td>{label}</td>",
            f'<td class="num">{precision}</td>',
            f'<td class="num">{DASH if absent else _num(row.get("recall"))}</td>',
            f'<td class="num"{style}>{DASH if absent else _num(f1)}</td>',
            f'<td class="num">{row.get("support", 0):,}</td>',
            f'<td class="num">{_num(row.get("ap"))}</td>',
            f'<td class="num">{_num(row.get("auc"))}</td>',
        ]
        body.append(f"<tr{' class=absent' if absent else ''}>{''.join(cells)}</tr>")
    head = (
        '<tr><th>Class</th><th class="num">Precision</th><th class="num">Recall</th><th class="num">F1</th>'
        '<th class="num">Images</th><th class="num">AP</th><th class="num">AUC</th></tr>'
    )
    return (
        '<section id="per-class">\n<h2>Per class</h2>\n'
        '<p class="note">Worst F1 first; the F1 colour runs from red (0) to green (1). Classes without images in '
        "this data are listed last.</p>\n"
        f'<table class="per-class">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>\n</section>"
    )


def _predicted_counts(metrics: dict) -> dict[str, int]:
    """How often each class was predicted: the column sums of the confusion matrix."""
    labels = metrics.get("labels") or []
    matrix = metrics.get("confusion_matrix") or []
    return {label: sum(row[j] for row in matrix) for j, label in enumerate(labels)}


def _f1_colour(f1: float) -> str:
    # Hue 0 (red) to 120 (green); pale, so the numbers on top stay easy to read.
    hue = round(120 * min(max(f1, 0.0), 1.0))
    return f"hsl({hue}, 70%, 82%)"


def _confusion_note(metrics: dict) -> str:
    note = (
        "Rows are the true classes, columns what the model predicted. Each row is coloured by its share of that "
        "class's images, so a dark cell off the diagonal is a confusion that matters however large the class is."
    )
    if len(metrics.get("labels") or []) > MAX_ANNOTATED_CLASSES:
        note += (
            " The page shows it scaled down: open <code>confusion_matrix.png</code> next to this file for full size."
        )
    return note


def _plot_section(anchor: str, heading: str, png: bytes | None, note: str) -> str:
    return (
        f'<section id="{anchor}">\n<h2>{heading}</h2>\n<p class="note">{note}</p>\n{_figure(png, heading)}\n</section>'
    )


def _curves_section(plots: dict[str, bytes]) -> str:
    note = (
        "Each class against all others. A curve hugging the top right (precision-recall) or top left (ROC) "
        "separates the class well; AP and AUC summarise each curve in one number (1 is perfect)."
    )
    return (
        '<section id="curves">\n<h2>Precision-recall and ROC curves</h2>\n'
        f'<p class="note">{note}</p>\n<div class="curves">\n'
        f"{_figure(plots.get('pr_curves'), 'Precision-recall curves')}\n"
        f"{_figure(plots.get('roc_curves'), 'ROC curves')}\n</div>\n</section>"
    )


def _figure(png: bytes | None, alt: str) -> str:
    if not png:
        return f'<p class="note">{_e(alt)}: not available.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<figure class="plot"><img src="data:image/png;base64,{data}" alt="{_e(alt)}"></figure>'


def _confused_pairs(metrics: dict) -> str:
    pairs = metrics.get("confused_pairs") or []
    if not pairs:
        body = '<p class="note">No class was confused with another.</p>'
    else:
        rows = "\n".join(
            f"<tr><td>{_e(p['true'])}</td><td>{_e(p['predicted'])}</td>"
            f'<td class="num">{p["count"]:,}</td><td class="num">{_pct(p.get("rate"))}</td></tr>'
            for p in pairs
        )
        body = (
            '<p class="note">The most frequent mistakes, worst first. Rate is the share of the true class\'s images '
            "that went to the predicted class.</p>\n"
            '<table>\n<thead><tr><th>True class</th><th>Predicted as</th><th class="num">Images</th>'
            f'<th class="num">Rate</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>'
        )
    return f'<section id="confused-pairs">\n<h2>Most confused pairs</h2>\n{body}\n</section>'


def _mistakes(metrics: dict) -> str:
    mistakes = metrics.get("mistakes") or []
    if not mistakes:
        return '<section id="mistakes">\n<h2>Mistakes</h2>\n<p class="note">No mistakes to show.</p>\n</section>'
    cards = "\n".join(_mistake_card(m) for m in mistakes)
    return (
        '<section id="mistakes">\n<h2>Most confident mistakes</h2>\n'
        '<p class="note">Wrong predictions the model was surest about, most confident first. They often show '
        "wrong labels in the data as much as weaknesses of the model.</p>\n"
        f'<div class="gallery">\n{cards}\n</div>\n</section>'
    )


def _mistake_card(mistake: dict) -> str:
    path = str(mistake.get("path", ""))
    thumb, reason = _thumbnail(path)
    if thumb is not None:
        picture = f'<img src="data:image/jpeg;base64,{thumb}" alt="{_e(Path(path).name)}">'
    else:
        picture = f'<div class="placeholder">no preview<br>{_e(reason or "")}</div>'
    return (
        f'<figure class="card"><div class="thumb">{picture}</div>'
        f'<figcaption><div class="true">true: <b>{_e(mistake.get("true", ""))}</b></div>'
        f'<div class="pred">predicted: <b>{_e(mistake.get("predicted", ""))}</b> ({_num(mistake.get("score"))})</div>'
        f'<div class="path" title="{_e(path)}">{_e(Path(path).name)}</div></figcaption></figure>'
    )


def _thumbnail(path: str) -> tuple[str | None, str | None]:
    """Base64 JPEG thumbnail of an image file, or (None, why not) when it cannot be read."""
    from imgcls.data.images import ImageLoadError, load_image

    try:
        img = load_image(path)
    except ImageLoadError as err:
        return None, err.reason
    img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buf.getvalue()).decode("ascii"), None


# --------------------------------------------------------------------------------------------- format


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _get(metrics: dict, *keys: str) -> Any:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: float | None, digits: int = 3) -> str:
    return DASH if _is_missing(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return DASH if _is_missing(value) else f"{100 * value:.1f}%"
