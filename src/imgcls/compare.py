"""`imgcls compare`: two or more evaluations side by side — the summary, and per-class F1 against a baseline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from imgcls.data.sources import DataError

SUMMARY = (
    ("images", lambda m: m.get("num_samples")),
    ("top-1", lambda m: m.get("top1")),
    ("top-5", lambda m: m.get("top5")),
    ("balanced accuracy", lambda m: m.get("balanced_accuracy")),
    ("macro F1", lambda m: m.get("macro", {}).get("f1")),
    ("weighted F1", lambda m: m.get("weighted", {}).get("f1")),
    ("macro AP", lambda m: (m.get("ap") or {}).get("macro")),
    ("micro AP", lambda m: (m.get("ap") or {}).get("micro")),
    ("macro AUC", lambda m: (m.get("auc") or {}).get("macro")),
    ("ECE", lambda m: (m.get("calibration") or {}).get("ece")),
)


@dataclass
class Evaluation:
    name: str
    path: Path
    metrics: dict[str, Any]


def load_evaluation(ref: str | Path) -> Evaluation:
    """A run folder (`runs/NAME`), its `eval/` folder, or a `metrics.json` file."""
    path = Path(ref)
    candidates = [path, path / "metrics.json", path / "eval" / "metrics.json"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(f"{path}: no evaluation found (looked for metrics.json, eval/metrics.json)")
    try:
        metrics = json.loads(found.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{found}: not valid JSON ({err})") from None
    if "per_class" not in metrics or "top1" not in metrics:
        raise DataError(f"{found}: not an imgcls metrics.json (no top1/per_class)")
    # Name it after the run: runs/NAME/eval/metrics.json -> NAME.
    parts = found.parent.parts
    name = parts[-2] if len(parts) >= 2 and found.parent.name == "eval" else found.parent.name
    return Evaluation(name=name or str(found), path=found, metrics=metrics)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


@dataclass
class Comparison:
    evaluations: list[Evaluation]
    summary: list[tuple[str, list[Any]]]
    per_class: list[tuple[str, list[float | None]]]  # label, F1 of each evaluation (None: class not in it)
    warnings: list[str]

    def print(self, console: Console) -> None:
        names = [e.name for e in self.evaluations]
        table = Table(title="summary", show_edge=False, header_style="bold")
        table.add_column("metric")
        for name in names:
            table.add_column(name, justify="right")
        for metric, values in self.summary:
            table.add_row(metric, *[_fmt(v) for v in values])
        console.print(table)
        per = Table(
            title=f"per-class F1 (Δ against {names[0]}), biggest change first", show_edge=False, header_style="bold"
        )
        per.add_column("class")
        per.add_column(names[0], justify="right")
        for name in names[1:]:
            per.add_column(name, justify="right")
            per.add_column("Δ", justify="right")
        for label, values in self.per_class:
            cells = [_fmt(values[0])]
            for v in values[1:]:
                delta = None if v is None or values[0] is None else v - values[0]
                colour = "" if delta is None or abs(delta) < 1e-12 else ("green" if delta > 0 else "red")
                cells += [_fmt(v), f"[{colour}]{delta:+.4f}[/]" if colour else _fmt(delta)]
            per.add_row(label, *cells)
        console.print(per)
        for warning in self.warnings:
            console.print(f"[yellow]{warning}[/]")


def compare(evaluations: list[Evaluation]) -> Comparison:
    """Line up evaluations; classes are matched by name, so models with different label orders compare fine."""
    summary = [(metric, [get(e.metrics) for e in evaluations]) for metric, get in SUMMARY]
    f1 = [{row["label"]: row["f1"] for row in e.metrics["per_class"] if row.get("support", 1) > 0} for e in evaluations]
    labels = list(dict.fromkeys(label for table in f1 for label in table))
    rows = [(label, [table.get(label) for table in f1]) for label in labels]

    def change(row: tuple[str, list[float | None]]) -> float:
        base, others = row[1][0], row[1][1:]
        deltas = [abs(v - base) for v in others if v is not None and base is not None]
        return max(deltas, default=0.0)

    rows.sort(key=lambda r: (-change(r), r[0]))
    warnings = []
    sizes = {e.metrics.get("num_samples") for e in evaluations}
    if len(sizes) > 1:
        warnings.append("the evaluations used different numbers of images; compare on the same data for a fair test")
    return Comparison(evaluations=evaluations, summary=summary, per_class=rows, warnings=warnings)


def to_markdown(result: Comparison) -> str:
    names = [e.name for e in result.evaluations]
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {metric} | " + " | ".join(_fmt(v) for v in values) + " |" for metric, values in result.summary]
    lines += ["", "| class | " + " | ".join(names) + " | " + " | ".join(f"Δ {n}" for n in names[1:]) + " |"]
    lines += ["|---" * (2 * len(names)) + "|"]
    for label, values in result.per_class:
        deltas = [None if v is None or values[0] is None else v - values[0] for v in values[1:]]
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt(v) for v in values)
            + " | "
            + " | ".join("—" if d is None else f"{d:+.4f}" for d in deltas)
            + " |"
        )
    lines += [f"\n{w}" for w in result.warnings]
    return "\n".join(lines) + "\n"
