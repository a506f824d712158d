"""Teacher and student on the built-in digits: does distillation / do pseudo-labels beat the student alone?

Two experiments, each over several seeds with the same budget (epochs, batch, lr) for every arm:

* distill: a LeNet-5 student trained alone vs distilled (soft KL) from a ResNet-18 teacher trained on all the
  digits' training labels (the quick-start recipe; made once and cached unless --teacher is given). The student
  trains on 10% of the labels (`--distill-data few`, the default: the case where a big model's knowledge is worth
  having) or on all of them (`full`: LeNet-5 alone already reaches the teacher's 98.9% there);
* pseudo: the same 10% of the training labels (per class, fixed draw), the other 90% as unlabelled images. The
  student on the 10% alone vs self-training (the student labels the unlabelled images itself) vs a teacher that
  saw only the same 10% (a ResNet-18) labelling them once.

Every number is test top-1 on the held-out test split (360 images), never on data a model chose by. Each run's
training time (Lightning's fit: the epochs, not the data check or the final evaluation) is recorded too.

`--teacher-views N` adds a distillation arm with the teacher's logits cached over N fixed views per image
(`imgcls train --teacher-views N`): the teacher runs on N x images images in all instead of epochs x images.

    python benchmarks/teacher_student.py                  # the full run in BENCHMARKS.md (~25 min on 2 cores)
    python benchmarks/teacher_student.py --seeds 1 --epochs 1 --teacher-epochs 1   # smoke
    python benchmarks/teacher_student.py --only distill --teacher-views 4 --seeds 3   # the teacher cache
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine  # noqa: E402

# The digits are 8x8 scans upscaled to 32 px: no flips, no centre crop (the quick-start recipe).
DIGITS = dict(img_size=32, crop_pct=1.0, hflip=0.0, crop_scale=0.5, progress=False)


def top1(result: Any) -> float:
    assert result.eval_split == "test", result.eval_split
    return float(result.metrics["top1"])


def train_teacher(
    data: Path, runs: Path, epochs: int, name: str, model: str = "resnet18", lr: float = 2e-3, **options: Any
) -> Path:
    from imgcls import train

    package = runs / name / "model"
    if (package / "config.json").exists():
        return package
    shutil.rmtree(runs / name, ignore_errors=True)
    # No label smoothing: a smoothed teacher's probabilities are flattened towards uniform, the knowledge a
    # student would learn from them (Mueller et al. 2019 measured label-smoothed teachers distilling worse).
    result = train(data=str(data), model=model, epochs=epochs, batch_size=32, lr=lr, seed=0,
                   label_smoothing=0.0, runs_dir=str(runs), name=name, **{**DIGITS, **options})  # fmt: skip
    print(f"teacher {name}: test top-1 {top1(result):.2%}", flush=True)
    return result.package_dir


def split_labels(digits: Path, out: Path, fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """OUT/labelled/{train,test}/CLASS (a `fraction` of each class's training images) and OUT/unlabelled/*.png."""
    labelled, unlabelled = out / "labelled", out / "unlabelled"
    if labelled.exists() and unlabelled.exists():
        return labelled, unlabelled
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    for class_dir in sorted((digits / "train").iterdir()):
        files = sorted(class_dir.glob("*.png"))
        rng.shuffle(files)
        keep = max(2, round(len(files) * fraction))
        (labelled / "train" / class_dir.name).mkdir(parents=True)
        unlabelled.mkdir(parents=True, exist_ok=True)
        for f in files[:keep]:
            os.symlink(f.resolve(), labelled / "train" / class_dir.name / f.name)
        for f in files[keep:]:  # flat: the class is exactly what the model must not be told
            os.symlink(f.resolve(), unlabelled / f"{class_dir.name}-{f.name}")
    os.symlink((digits / "test").resolve(), labelled / "test")
    return labelled, unlabelled


def fit_seconds(result: Any) -> float:
    """The run's training time as the package records it (the fit alone, without data check and evaluation)."""
    config = json.loads((result.package_dir / "config.json").read_text(encoding="utf-8"))
    return float(config["imgcls"]["training"]["seconds"])


def run_arms(
    arms: dict[str, dict[str, Any]], seeds: range, common: dict[str, Any], runs: Path, only: str | None = None
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Test top-1, fit seconds and whole-run CPU seconds per arm, one entry per seed."""
    from imgcls import train

    if only:
        arms = {name: options for name, options in arms.items() if name in only.split(",")}

    scores: dict[str, list[float]] = {name: [] for name in arms}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    for seed in seeds:
        for name, options in arms.items():
            start, cpu_start = time.perf_counter(), cpu_seconds()
            result = train(**{**common, **options}, seed=seed, runs_dir=str(runs), name=f"{name}-s{seed}")
            scores[name].append(top1(result))
            seconds[name].append(fit_seconds(result))
            cpu[name].append(cpu_seconds() - cpu_start)
            print(
                f"  {name:14s} seed {seed}: {scores[name][-1]:.2%}  (fit {seconds[name][-1]:.1f} s; whole run "
                f"{time.perf_counter() - start:.0f} s, {cpu[name][-1]:.0f} CPU s)",
                flush=True,
            )
            shutil.rmtree(result.run_dir, ignore_errors=True)  # its own folder: a concurrent run may hold NAME
    return scores, seconds, cpu


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers): less swayed than wall time by
    other jobs on a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def summary(
    scores: dict[str, list[float]],
    seconds: dict[str, list[float]] | None = None,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, dict[str, Any]]:
    out = {}
    for name, values in scores.items():
        out[name] = {
            "top1": values,
            "mean": statistics.fmean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
        if seconds and seconds.get(name):
            out[name]["fit_seconds"] = seconds[name]
            out[name]["fit_seconds_mean"] = statistics.fmean(seconds[name])
        if cpu and cpu.get(name):
            out[name]["run_cpu_seconds"] = cpu[name]
            out[name]["run_cpu_seconds_mean"] = statistics.fmean(cpu[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--epochs", type=int, default=40, help="student epochs, every arm")
    parser.add_argument("--distill-data", choices=["few", "full"], default="few")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--teacher", type=Path, help="teacher package for the distillation experiment")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--tau", type=float, default=2.0)
    parser.add_argument(
        "--teacher-views", type=int, default=0, help="also a distilled arm with the teacher cached over N views"
    )
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled share in the pseudo-label experiment")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument(
        "--share", type=float, default=10.0, help="pseudo-labels per labelled image at most (10: the whole pool)"
    )
    parser.add_argument(
        "--aa", default="rand-m9-mstd0.5-inc1", help="the noisy-student arms' augmentation (a timm policy)"
    )
    parser.add_argument("--only", choices=["distill", "pseudo"])
    parser.add_argument("--arms", help="comma-separated arm names to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "teacher_student.json")
    args = parser.parse_args()

    from imgcls.data.builtin import materialize

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = CACHE / "teacher_student"
    runs = work / "runs"
    digits = materialize("digits", work / "digits")
    # No validation split: with ~140 labelled images a 10% split is ~14 images, and "the best epoch on 14 images"
    # picked early, lucky checkpoints (test top-1 swung by 15 points between seeds). Every arm keeps its last epoch.
    student = dict(
        data=str(digits), model="lenet5", epochs=args.epochs, batch_size=32, lr=3e-3, val_fraction=0.0, **DIGITS
    )
    result: dict[str, Any] = {"machine": machine(), "options": {k: str(v) for k, v in vars(args).items()}}
    # Timings on a shared machine mean little without the load other jobs put on it.
    result["load_average_start"] = os.getloadavg()

    labelled, unlabelled = split_labels(digits, work / f"split-{args.fraction}", args.fraction)
    if args.only in (None, "distill"):
        teacher = args.teacher or train_teacher(
            digits, runs, args.teacher_epochs, f"teacher-ls0-e{args.teacher_epochs}"
        )
        data = labelled if args.distill_data == "few" else digits
        print(f"distillation: LeNet-5 student on {data}, {args.epochs} epochs, {args.seeds} seeds, teacher {teacher}")
        arms = {
            "alone": {},
            "distilled": dict(teacher=str(teacher), distill="soft", alpha=args.alpha, tau=args.tau),
        }
        if args.teacher_views:
            arms[f"distilled {args.teacher_views} views"] = {**arms["distilled"], "teacher_views": args.teacher_views}
        result["distill"] = summary(
            *run_arms(
                arms,
                range(args.first_seed, args.first_seed + args.seeds),
                {**student, "data": str(data)},
                runs,
                args.arms,
            )
        )

    if args.only in (None, "pseudo"):
        # No label smoothing in any arm here: smoothing caps the confidence the threshold looks at.
        few = {**student, "data": str(labelled), "label_smoothing": 0.0}
        # The teacher of the unlabelled images knows only the same labels: a LeNet-5 trained on them with the
        # student's recipe (a ResNet-18 from scratch on ~140 images reached only 76% and was never 0.9 sure).
        name = f"teacher-lenet-{args.fraction}-e{args.epochs}-noval"
        teacher = train_teacher(labelled, runs, args.epochs, name, model="lenet5", lr=3e-3, val_fraction=0.0)
        n_lab = sum(1 for _ in (labelled / "train").glob("*/*.png"))
        n_unl = sum(1 for _ in unlabelled.glob("*.png"))
        print(f"pseudo-labels: {n_lab} labelled + {n_unl} unlabelled, {args.seeds} seeds", flush=True)
        pseudo = dict(unlabeled=str(unlabelled), pseudo_threshold=args.threshold, pseudo_share=args.share)
        arms = {
            "labels only": {},
            # Pseudo-labels lengthen an epoch: twice the steps on the labels alone shows what more optimiser
            # steps without more images do (here: nothing good).
            "labels only, 2x epochs": dict(epochs=args.epochs * 2),
            "self-training": dict(pseudo, pseudo_start=max(1, args.epochs // 3)),
            # alpha 0: the teacher only labels the unlabelled images; its logits add nothing else
            "teacher labels": dict(pseudo, teacher=str(teacher), alpha=0.0),
            # the same teacher's soft outputs as well, on labelled and pseudo-labelled images alike
            "teacher labels + soft": dict(pseudo, teacher=str(teacher), alpha=args.alpha, tau=args.tau),
            # Noisy Student (Xie et al. 2020): the teacher labels clean images, the student learns them through
            # strong augmentation. The same augmentation on the labels alone is the fair comparison.
            "labels only + RandAugment": dict(auto_augment=args.aa),
            "noisy student": dict(pseudo, teacher=str(teacher), alpha=args.alpha, tau=args.tau, auto_augment=args.aa),
        }
        result["pseudo"] = summary(
            *run_arms(arms, range(args.first_seed, args.first_seed + args.seeds), few, runs, args.arms)
        )
        result["pseudo"]["images"] = {"labelled": n_lab, "unlabelled": n_unl}

    result["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for experiment in ("distill", "pseudo"):
        for name, row in result.get(experiment, {}).items():
            if "mean" in row:
                print(
                    f"{experiment:8s} {name:26s} {row['mean']:.2%} ± {row['stdev']:.2%}  "
                    f"{[f'{v:.2%}' for v in row['top1']]}  fit {row.get('fit_seconds_mean', 0):.1f} s, "
                    f"run {row.get('run_cpu_seconds_mean', 0):.0f} CPU s"
                )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
