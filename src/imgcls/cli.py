"""The `imgcls` command: one thin function per verb over the library.

Heavy imports (torch, timm, lightning) happen inside the verbs so `imgcls --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imgcls import __version__

# Nothing we run by default should wait on a network that is not there; users opt in with --pretrained.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _floats3(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.485,0.456,0.406, got {text!r}")
    return tuple(float(p) for p in parts)  # type: ignore[return-value]


def _add_train(sub: argparse._SubParsersAction) -> None:
    from imgcls.config import CLASS_WEIGHTS, PRECISIONS, SAMPLERS, STRATEGIES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="fine-tune a model on a folder of images",
        description="Fine-tune a model. Writes runs/NAME/ with config.yaml, metrics.csv, checkpoints/, "
        "model/ (the package of the best epoch), eval/ and data_check.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="folder of class subfolders, CSV manifest (path,label), built-in name (digits), "
        "or shard manifest.json (path or URL, from `imgcls shard`; streamed)",
    )
    p.add_argument("--config", type=Path, help="a run's config.yaml to start from; flags given here override it")
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.ckpt"
    )
    g = p.add_argument_group("task")
    g.add_argument(
        "--task",
        choices=["multiclass", "multilabel"],
        default=d.task,
        help="multilabel: a CSV with several labels per image (path,labels with ';')",
    )
    g.add_argument(
        "--loss",
        choices=["bce", "asl"],
        default=d.loss,
        help="multi-label loss: binary cross-entropy or asymmetric loss",
    )
    g.add_argument(
        "--threshold-precision", type=float, help="multi-label: tune thresholds for this precision (default: best F1)"
    )
    g = p.add_argument_group("distillation")
    g.add_argument(
        "--teacher", help="teacher: a model package (folder, hf://, git+) or timm model with the same classes"
    )
    g.add_argument(
        "--distill", choices=["soft", "hard"], default=d.distill, help="soft: KL at --tau; hard: the teacher's argmax"
    )
    g.add_argument("--alpha", type=float, default=d.alpha, help="weight of the teacher term (labels get 1 - alpha)")
    g.add_argument("--tau", type=float, default=d.tau, help="temperature of soft distillation")
    g.add_argument(
        "--teacher-views",
        type=int,
        default=d.teacher_views,
        metavar="N",
        help="give each image N fixed augmented views and cache the teacher's logits per view: the teacher runs on "
        "at most N x images images in all, for N crops per image instead of one per epoch (RAM: images x N x "
        "classes x 2 bytes, at most 4 GiB; not with mixup/cutmix or shards; 0 = off)",
    )
    g = p.add_argument_group("pseudo-labels")
    g.add_argument(
        "--unlabeled",
        help="folder of unlabelled images to learn from (teacher: --teacher, else the model itself); with --teacher, "
        "--aa rand-m9-mstd0.5-inc1 makes it Noisy Student (the recipe that won on the digits)",
    )
    g.add_argument(
        "--pseudo-threshold", type=float, default=d.pseudo_threshold, help="least confidence of a pseudo-label"
    )
    g.add_argument(
        "--pseudo-share", type=float, default=d.pseudo_share, help="most pseudo-labelled images per labelled one"
    )
    g.add_argument(
        "--pseudo-start", type=int, default=d.pseudo_start, help="self-training: first epoch whose end relabels"
    )
    g = p.add_argument_group("few-shot heads (frozen backbone, fitted in seconds)")
    g.add_argument(
        "--head",
        choices=["finetune", "linear-probe", "knn"],
        default=d.head,
        help="linear-probe: logistic regression on the --model's embeddings; knn: nearest-neighbour vote",
    )
    g.add_argument("--knn-k", type=int, default=d.knn_k, help="knn: neighbours that vote")
    g.add_argument("--probe-c", type=float, default=d.probe_c, help="linear-probe: inverse regularisation strength")
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=d.model,
        help="timm model name, hf-hub:ORG/NAME, lenet5 or alexnet (see `imgcls models`); with --head also a model "
        "package or a CLIP model (open_clip:REF, or a folder with open_clip_config.json)",
    )
    g.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=d.pretrained,
        help="start from the model's pretrained weights (timm: hub or cache)",
    )
    g.add_argument(
        "--weights", help="start from a local .safetensors file or HF/timm model folder; the head is replaced"
    )
    g.add_argument("--drop-rate", type=float, default=d.drop_rate, help="dropout before the classifier")
    g = p.add_argument_group("preprocessing (default: the model's pretrained config)")
    g.add_argument("--img-size", type=int, help="input size in pixels")
    g.add_argument("--mean", type=_floats3, help="normalisation mean, R,G,B")
    g.add_argument("--std", type=_floats3, help="normalisation std, R,G,B")
    g.add_argument("--crop-pct", type=float, help="centre-crop fraction at evaluation (1.0 = none)")
    g.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"], help="resize interpolation")
    g = p.add_argument_group("augmentation")
    g.add_argument("--hflip", type=float, default=d.hflip, help="horizontal flip probability (0 for digits and text)")
    g.add_argument(
        "--crop-scale", type=float, default=d.crop_scale, help="smallest area fraction of the random-resized crop"
    )
    g.add_argument(
        "--auto-augment",
        "--aa",
        dest="auto_augment",
        help="timm policy: rand-m9-mstd0.5-inc1 (RandAugment), augmix-m5-w4-d2, original (AutoAugment)",
    )
    g.add_argument(
        "--random-erase", "--reprob", dest="random_erase", type=float, default=d.random_erase,
        help="probability of erasing a random rectangle of a training image",
    )  # fmt: skip
    g.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="CutMix alpha (0 = off)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="global batch, split evenly over devices × nodes"
    )
    g.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate (for --lr-batch images)")
    g.add_argument(
        "--lr-batch",
        type=int,
        help="the global batch --lr is meant for: the rate used is lr × batch-size / lr-batch (default: batch-size)",
    )
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warmup, then cosine decay")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument(
        "--freeze-epochs",
        type=int,
        default=d.freeze_epochs,
        help="train only the classifier head for the first N epochs",
    )
    g.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTS,
        default=d.class_weights,
        help="auto: weigh the loss by inverse class frequency",
    )
    g.add_argument("--sampler", choices=SAMPLERS, default=d.sampler, help="balanced: draw every class equally often")
    g.add_argument("--patience", type=int, help="stop early after N epochs without a better validation top-1")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="auto: bf16 autocast where the hardware supports it",
    )
    g = p.add_argument_group("data and run")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of each class held out when there is no val/ folder",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--allow-outside-root",
        action="store_true",
        default=d.allow_outside_root,
        help="let a CSV manifest list images outside its own folder (refused by default)",
    )
    g.add_argument("--num-workers", type=int, help="data-loading processes (default: one per spare core, up to 4)")
    g.add_argument("--runs-dir", default=d.runs_dir)
    g.add_argument("--name", help="run folder name (default: MODEL-DATA, numbered if it exists)")
    g.add_argument("--accelerator", default=d.accelerator, help="auto, cpu, gpu")
    g.add_argument("--devices", default=d.devices, help="devices per node (e.g. 8 GPUs; with cpu: processes)")
    g.add_argument("--num-nodes", type=int, default=d.num_nodes, help="machines (torchrun or SLURM starts them)")
    g.add_argument(
        "--strategy", choices=STRATEGIES, default=d.strategy, help="distributed strategy across devices and nodes"
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.faults import CheckpointError, TrainingInterrupted

    try:
        return _train(args, parser)
    except TrainingInterrupted as err:
        # 128 + the signal, as for any program a signal stopped: a scheduler must not take it for a finished run.
        print(f"imgcls train: {err}", file=sys.stderr)
        return err.exit_code
    except CheckpointError as err:
        print(f"imgcls train: error: {err}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.config import TrainConfig
    from imgcls.evaluation import print_metrics
    from imgcls.training import console, train

    given = {a.dest for a in parser._get_positional_actions()} | set(_explicit_flags(parser, args.argv))
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and k != "data"}
    if args.data is not None:
        values["data"] = args.data
    if args.resume is not None:
        # Only flags typed on the command line override the run's own config.yaml.
        overrides = {k: v for k, v in values.items() if k in given}
        result = train(resume=args.resume, **overrides)
    else:
        if args.config is not None:
            base = TrainConfig.load(args.config)
            overrides = {k: v for k, v in values.items() if k in given}
            config = TrainConfig.from_dict({**base.to_dict(), **overrides})
        else:
            if args.data is None:
                parser.error("train: give DATA (a folder, a CSV manifest or `digits`), --config or --resume")
            config = TrainConfig.from_dict(values)
        result = train(config)
    if result.global_rank != 0:  # the other processes of a distributed run: rank 0 reports
        return 0
    print_metrics(result.metrics, console)
    console.print(
        f"\n[bold green]done[/]  run folder: {result.run_dir}\n"
        f"  model package: {result.package_dir}\n"
        f"  evaluation ({result.eval_split} split): {result.run_dir / 'eval' / 'metrics.json'}\n"
        f"  next: imgcls predict {result.package_dir} IMAGE..."
    )
    return 0


def _explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Destinations of the optional flags actually typed (so they, and only they, override a config)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train_parser = sub.choices["train"]
    dests = []
    for action in train_parser._actions:
        for opt in action.option_strings:
            if any(arg == opt or arg.startswith(opt + "=") for arg in argv):
                dests.append(action.dest)
    return dests


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model package on labelled images",
        description="Top-1/top-5, per-class precision/recall/F1, confusion matrix, PR and ROC curves with AP/AUC, "
        "calibration (ECE, reliability diagram) and the most confident mistakes: a table here, and report.html, "
        "metrics.json, predictions.csv and PNG plots in --out.",
    )
    p.add_argument("model", help="model package folder (e.g. runs/NAME/model)")
    p.add_argument(
        "data",
        help="dataset root (uses test/, else val/, else all), class-subfolder folder, CSV manifest or built-in name",
    )
    p.add_argument(
        "--split", default="auto", choices=["auto", "train", "val", "test", "all"], help="which split of a dataset root"
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a softmax temperature on validation images (DATA/val/, or the run's own validation split) "
        "and store it in the model package, so every later prediction reports calibrated scores",
    )
    p.add_argument("--mistakes", type=int, default=24, help="how many of the most confident mistakes to show")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip report.html and the plots")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="torch", help="inference backend")
    p.add_argument(
        "--out", type=Path, help="folder for metrics.json (default: MODEL/../eval when MODEL is in a run, else ./eval)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int)
    p.add_argument(
        "--allow-outside-root", action="store_true", help="let a CSV manifest list images outside its own folder"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console

    from imgcls.evaluation import evaluate, print_metrics

    out = args.out
    if out is None:
        model_dir = Path(args.model)
        out = model_dir.parent / "eval" if (model_dir.parent / "config.yaml").is_file() else Path("eval")
    from imgcls.predict import Classifier

    metrics = evaluate(
        Classifier.load(args.model, backend=args.backend),
        args.data,
        split=args.split,
        out=out,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=args.progress,
        report=args.report,
        calibrate_temperature=args.calibrate,
        mistakes=args.mistakes,
        allow_outside_root=args.allow_outside_root,
    )
    console = Console()
    print_metrics(metrics, console)
    if args.calibrate:
        cal = metrics["calibration"]
        console.print(
            f"calibrated: temperature {cal['temperature']} stored in {args.model}; "
            f"ECE {cal['ece_before']:.4f} → {cal['ece']:.4f}"
        )
    written = "report.html, metrics.json, predictions.csv and plots" if args.report else "metrics.json, predictions.csv"
    console.print(f"{written} in {out}" + (f"\nopen {out / 'report.html'}" if args.report else ""))
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="put two or more evaluations side by side",
        description="Compare evaluations: run folders, eval folders or metrics.json files. The first is the baseline; "
        "the others show per-class F1 deltas against it.",
    )
    p.add_argument("evaluations", nargs="+", help="runs/NAME, runs/NAME/eval or a metrics.json (two or more)")
    p.add_argument("--out", type=Path, help="also write the comparison as Markdown to this file")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console

    from imgcls.compare import compare, load_evaluation, to_markdown

    if len(args.evaluations) < 2:
        parser.error("compare needs two or more evaluations")
    result = compare([load_evaluation(ref) for ref in args.evaluations])
    console = Console()
    result.print(console)
    if args.out:
        args.out.write_text(to_markdown(result), encoding="utf-8")
        console.print(f"written to {args.out}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k labels for images",
        description="Top-k labels for image files, folders or glob patterns. Unreadable files get a per-file error; the rest still get predictions.",
    )
    p.add_argument(
        "model", help="model package folder (e.g. runs/NAME/model), hf://ORG/NAME@VERSION or git+URL@VERSION"
    )
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    p.add_argument("--out", type=Path, help="write to this file instead of standard output")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="decode processes (default: one per core; 0 = decode in this process)")
    p.add_argument(
        "--backend", choices=["auto", "torch", "onnx"], default="auto", help="onnx needs `imgcls export` first"
    )
    p.add_argument("--token", help="access token for a private hf:// or git+ model")
    g = p.add_argument_group(
        "at scale (--out NAME.parquet)",
        "A .parquet --out is a folder of Parquet parts: a rerun after a crash predicts only what is missing, "
        "and several processes can share the work. IMAGES may then also be shard manifests or .tar shards "
        "(paths or fsspec URLs).",
    )
    g.add_argument("--part-size", type=int, default=4096, help="rows per part file (the most a crash can cost)")
    g.add_argument("--num-shards", type=int, help="split the work into this many shares (default: $WORLD_SIZE, else 1)")
    g.add_argument("--shard-index", type=int, help="the share this process does (default: $RANK, else 0)")
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda:$LOCAL_RANK when a GPU is there, else cpu)")
    p.set_defaults(func=cmd_predict)


def _predict_device(device: str | None) -> str:
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


def cmd_predict_parquet(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console

    from imgcls.batch_predict import predict_to_parquet
    from imgcls.predict import Classifier

    if args.format != "table":
        parser.error("--format does not apply to a .parquet --out (Parquet holds every column)")
    if args.num_shards is None and args.shard_index is not None:
        parser.error("--shard-index needs --num-shards")
    clf = Classifier.load(args.model, backend=args.backend, token=args.token, device=_predict_device(args.device))
    try:
        result = predict_to_parquet(
            clf,
            args.images,
            args.out,
            top_k=args.top_k,
            batch_size=args.batch_size,
            workers=args.workers,
            part_size=args.part_size,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
        )
    except ValueError as err:
        print(f"imgcls predict: error: {err}", file=sys.stderr)
        return 2
    share = f" (share {result.shard_index + 1} of {result.num_shards})" if result.num_shards > 1 else ""
    Console(stderr=True).print(
        f"{result.predicted:,} image(s) predicted{share} in {result.seconds:.1f} s, {result.failed:,} unreadable; "
        f"{result.done_before:,} were already done; {result.parts_written} part(s) written to {result.out}",
        highlight=False,
    )
    return 0


def cmd_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import csv
    import io
    import json

    from rich.console import Console
    from rich.table import Table

    from imgcls.predict import Classifier, expand_inputs

    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.out is not None and args.out.suffix == ".parquet":
        return cmd_predict_parquet(args, parser)
    # `zeroshot` hands over a Classifier it built; the verb otherwise loads a package.
    clf = (
        args.model
        if isinstance(args.model, Classifier)
        else Classifier.load(args.model, backend=args.backend, token=args.token)
    )
    files = expand_inputs(args.images)
    if not files:
        parser.error("no images found in " + " ".join(args.images))
    err = Console(stderr=True)
    failed = 0
    stream = io.StringIO() if args.out else sys.stdout
    table = None
    writer = None
    if args.format == "table":
        table = Table(show_edge=False, header_style="bold")
        table.add_column("image")
        table.add_column("top-1", style="bold")
        table.add_column("score", justify="right")
        table.add_column(f"top-{args.top_k}" if args.top_k > 1 else "")
    elif args.format == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        header = ["path"]
        for i in range(1, args.top_k + 1):
            header += [f"label_{i}", f"score_{i}"]
        writer.writerow(header + ["error"])
    for pred in clf.predict_iter(files, top_k=args.top_k, batch_size=args.batch_size, workers=args.workers):
        if pred.error is not None:
            failed += 1
            err.print(f"[red]error[/] {pred.error}", highlight=False)
        if args.format == "jsonl":
            record = (
                {"path": pred.source, "predictions": pred.top}
                if pred.top is not None
                else {"path": pred.source, "error": pred.error}
            )
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif args.format == "csv":
            row = [pred.source]
            top = pred.top or []
            for i in range(args.top_k):
                row += [top[i]["label"], f"{top[i]['score']:.6f}"] if i < len(top) else ["", ""]
            writer.writerow(row + [pred.error or ""])
        elif pred.top is not None:
            rest = ", ".join(f"{t['label']} {t['score']:.3f}" for t in pred.top[1:])
            table.add_row(pred.source, pred.top[0]["label"], f"{pred.top[0]['score']:.3f}", rest)
        else:
            table.add_row(pred.source, "[red]error[/]", "", pred.error.removeprefix(pred.source + ": "))
    if args.out:
        if table is not None:
            Console(file=stream, width=200).print(table)
        args.out.write_text(stream.getvalue(), encoding="utf-8")
        err.print(f"{len(files) - failed} prediction(s) written to {args.out}")
    elif table is not None:
        Console().print(table)
    if failed:
        err.print(f"[yellow]{failed} of {len(files)} file(s) could not be read[/]")
    return 1 if failed else 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write an ONNX (and INT8) copy of a model package, checked against PyTorch",
        description="Write model.onnx (one file, dynamic batch axis) into the package and check it against PyTorch "
        "on sample images (max logit difference, top-1 agreement; stored in the package). --int8 adds "
        "model.int8.onnx (onnxruntime static quantisation); with --data, exits non-zero when INT8 top-1 drops more "
        "than --max-drop points.",
    )
    p.add_argument("model", help="model package folder (e.g. runs/NAME/model)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--int8", action="store_true", help="also write a quantised INT8 model")
    p.add_argument(
        "--calibration",
        type=Path,
        help="folder of images for INT8 calibration (default: --data, else the training data)",
    )
    p.add_argument("--data", type=Path, help="labelled images (class subfolders or a dataset root) to measure top-1 on")
    p.add_argument("--max-drop", type=float, default=1.0, help="largest INT8 top-1 drop allowed, in points")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.export import ExportError, export_onnx, summarise

    try:
        result = export_onnx(
            args.model,
            opset=args.opset,
            int8=args.int8,
            calibration=args.calibration,
            data=args.data,
            max_drop=args.max_drop,
        )
    except ExportError as err:
        print(f"imgcls export: error: {err}", file=sys.stderr)
        return 1
    for line in summarise(result):
        print(line)
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model package over HTTP (FastAPI)",
        description="POST /v1/classify (multipart files or JSON base64) → top-k labels; GET /v1/labels, /healthz; "
        "OpenAPI docs at /docs. Concurrent requests are micro-batched. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("model", help="model package folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--max-batch-size", type=int, default=32, help="most images per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest a request waits for others to batch with")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=10 * 2**20,
        help="largest request body accepted, in bytes (base64 adds a third)",
    )
    p.add_argument("--max-images", type=int, default=64, help="most images in one request")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` (or set IMGCLS_API_KEY)")
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds an upload may stall (no byte arriving) before it gets a 408 and its connection is closed",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.serve import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        backend=args.backend,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_bytes=args.max_bytes,
        max_images_per_request=args.max_images,
        api_key=args.api_key or os.environ.get("IMGCLS_API_KEY") or None,
        body_timeout=args.body_timeout,
    )
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="a web demo (Gradio): image in, top-5 out",
        description="Launch a Gradio page for a model package, or with --space write a self-contained app folder "
        "that runs as a Hugging Face Space or on any Gradio host.",
    )
    p.add_argument("model", help="model package folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: Gradio's (7860, or the next free port)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--space", type=Path, metavar="DIR", help="write an app folder to DIR instead of launching")
    p.add_argument("--overwrite", action="store_true", help="with --space: replace our files in DIR (keeps .git)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.demo import launch_demo, write_space

    if args.space:
        print(write_space(args.model, args.space, overwrite=args.overwrite))
        return 0
    launch_demo(args.model, host=args.host, port=args.port, share=args.share, backend=args.backend)
    return 0


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="publish a model package as a version on the Hugging Face Hub or any git remote",
        description="Publish a model package; it is verified first and nothing is uploaded if it is broken. "
        "hf://ORG/NAME creates the Hub repo if needed, commits and tags the version; git+URL (ModelScope, GitLab, "
        "Gitea, a bare repo on disk) commits the package with its metrics and pushes the branch and the tag "
        "(large files through git-lfs when installed). Prints the reference that loads what was pushed.",
    )
    p.add_argument("model", type=Path, help="model package folder (e.g. runs/NAME/model)")
    p.add_argument("dest", help="hf://ORG/NAME or git+URL (https://..., git@host:org/repo.git, file:///path, /path)")
    p.add_argument("--revision", help="version tag to create, e.g. v1.0.0 (an existing version is never moved)")
    p.add_argument("--private", action="store_true", help="create the Hub repository private (hf:// only)")
    p.add_argument(
        "--token",
        help="access token; prefer HF_TOKEN / MODELSCOPE_API_TOKEN or `hf auth login` (a flag is visible in shell history)",
    )
    p.add_argument("--message", help="commit subject (the metrics always go in the commit body)")
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.hub import push

    print(
        push(
            args.model, args.dest, revision=args.revision, private=args.private, token=args.token, message=args.message
        )
    )
    return 0


def _add_pull(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pull",
        help="write a published model package into a folder",
        description="Download (or take from the cache) hf://ORG/NAME[@VERSION] or git+URL[@VERSION] and write the "
        "package into OUT; a package already in OUT is replaced, any other content is refused.",
    )
    p.add_argument("ref", help="hf://ORG/NAME[@VERSION] or git+URL[@VERSION]")
    p.add_argument("out", type=Path, help="folder to write")
    p.add_argument("--token", help="access token for a private repository (default: HF_TOKEN / MODELSCOPE_API_TOKEN)")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.hub import pull

    print(pull(args.ref, args.out, token=args.token))
    return 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="find corrupt files, duplicates, leakage and imbalance in a dataset",
        description="Decode every image; list unreadable files, class counts, exact duplicates (also across splits) "
        "and, with --near-duplicates, images whose embeddings are nearly the same, in data_check.json.",
    )
    p.add_argument("data", help="folder of class subfolders, CSV manifest or built-in name")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("data_check.json"), help="where to write the JSON report")
    p.add_argument(
        "--allow-outside-root", action="store_true", help="let a CSV manifest list images outside its own folder"
    )
    p.add_argument(
        "--near-duplicates",
        action="store_true",
        help="also find near-duplicate images (cosine similarity of embeddings), across splits and within one",
    )
    p.add_argument(
        "--embed-model",
        help="model for --near-duplicates: timm name (pretrained weights), model package or CLIP model "
        "(default: mobilenetv3_small_100.lamb_in1k)",
    )
    p.add_argument("--similarity", type=float, default=0.95, help="least cosine similarity of a near-duplicate pair")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console

    from imgcls.data.check import check_splits
    from imgcls.data.sources import discover

    splits = discover(
        args.data, val_fraction=args.val_fraction, seed=args.seed, allow_outside_root=args.allow_outside_root
    )
    clean, report = check_splits(splits, progress=args.progress)
    if args.near_duplicates:
        from imgcls.data.near_duplicates import DEFAULT_EMBED_MODEL, find_near_duplicates

        if not 0.0 < args.similarity <= 1.0:
            parser.error("--similarity must be in (0, 1]")
        find_near_duplicates(
            clean,
            report,
            model=args.embed_model or DEFAULT_EMBED_MODEL,
            similarity=args.similarity,
            progress=args.progress,
        )
    elif args.embed_model:
        parser.error("--embed-model is for --near-duplicates")
    report.write_json(args.out)
    console = Console()
    # markup=False: "[train]" in the summary is text, not a Rich style tag (which would be dropped).
    console.print(report.summary(), markup=False, highlight=False)
    console.print(f"report written to {args.out}")
    return 0


def _add_shard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shard",
        help="write a dataset as WebDataset tar shards with a manifest, for streaming at scale",
        description="Check DATA and write OUT/{train,val,test}-NNNNNN.tar (images stay encoded, shuffled across "
        "shards) and OUT/manifest.json (classes, per-split shards with image counts). `imgcls train` and "
        "`imgcls evaluate` take the manifest (path or fsspec URL) as DATA and stream the shards.",
    )
    p.add_argument("data", help="folder of class subfolders, dataset root, CSV manifest or built-in name")
    p.add_argument("out", type=Path, help="folder to write (must not hold a manifest already)")
    p.add_argument("--shard-size", default="1GB", help="largest shard, e.g. 1GB, 500MB, 64KiB")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share held out when DATA has no val split")
    p.add_argument("--seed", type=int, default=0, help="seeds the validation split and the order in the shards")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_shard)


def cmd_shard(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.data.shards import parse_size, write_shards

    try:
        size = parse_size(args.shard_size)
    except ValueError as err:
        parser.error(str(err))
    manifest = write_shards(
        args.data, args.out, shard_size=size, val_fraction=args.val_fraction, seed=args.seed, progress=args.progress
    )
    for name, split in manifest["splits"].items():
        total = sum(s["bytes"] for s in split["shards"])
        print(f"{name}: {split['count']:,} images in {len(split['shards'])} shard(s), {total / 1e6:,.1f} MB")
    print(f"manifest: {args.out / 'manifest.json'}")
    return 0


def _add_zeroshot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zeroshot",
        help="classify images by label names alone, with CLIP (no training images)",
        description="Zero-shot classification: CLIP scores each image against prompts made from the labels "
        "(an ensemble of templates by default), softmax over the labels. --out saves it as a model package that "
        "predict, evaluate, serve, demo, export and push take like any other.",
    )
    p.add_argument("images", nargs="*", help="image files, folders or glob patterns to classify (optional with --out)")
    p.add_argument(
        "--model",
        required=True,
        help="CLIP model: a folder with open_clip_config.json + weights, hf-hub:ORG/NAME (online), or an open_clip "
        "name with --pretrained",
    )
    p.add_argument("--pretrained", help="open_clip pretrained tag or local checkpoint file, for a model name")
    p.add_argument(
        "--labels",
        required=True,
        help="'cat,dog,向日葵', a text file with one label per line, or a folder of class folders; an entry may be "
        "'name: description'",
    )
    p.add_argument(
        "--template",
        dest="templates",
        action="append",
        help="prompt template with {} for the label (repeat for an ensemble; default: eight templates)",
    )
    p.add_argument("--out", type=Path, help="save the zero-shot classifier as a model package in this folder")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_zeroshot)


def cmd_zeroshot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.predict import Classifier

    if not args.images and args.out is None:
        parser.error("zeroshot: give IMAGES to classify, --out to save the classifier, or both")
    clf = Classifier.zero_shot(
        args.model, args.labels, templates=args.templates, pretrained=args.pretrained, out=args.out
    )
    if args.out is not None:
        print(f"zero-shot model package written to {args.out} ({len(clf.labels)} labels)", file=sys.stderr)
    if not args.images:
        return 0
    args.model, args.out, args.workers, args.backend, args.token = clf, None, None, "torch", None
    return cmd_predict(args, parser)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="write image embeddings (pre-logits features) to a Parquet file",
        description="Embed images with a model package, a timm model (pretrained weights) or a CLIP image tower "
        "(open_clip:REF or a folder with open_clip_config.json). Streams batches into OUT (columns path, "
        "embedding); unreadable files are listed and skipped.",
    )
    p.add_argument("model", help="model package folder, hf:// or git+ ref, timm model name, or CLIP model")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write, e.g. emb.parquet")
    p.add_argument("--weights", help="timm names: a local weights file or folder instead of the published weights")
    p.add_argument("--img-size", type=int, help="timm names: input size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.embeddings import embed_files, load_backbone
    from imgcls.predict import expand_inputs

    files = expand_inputs(args.images)
    if not files:
        parser.error("no images found in " + " ".join(args.images))
    backbone = load_backbone(args.model, weights=args.weights, img_size=args.img_size)
    result = embed_files(
        backbone, files, args.out, batch_size=args.batch_size, num_workers=args.num_workers, progress=args.progress
    )
    for path in result.skipped:
        print(f"error {path}: could not be read; skipped", file=sys.stderr)
    print(f"{result.count} embedding(s) of size {result.dim} written to {result.out}", file=sys.stderr)
    return 1 if result.skipped else 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model names (timm's plus lenet5 and alexnet)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*' or '*vit*'")
    p.add_argument("--pretrained", action="store_true", help="only models that have pretrained weights")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.models import list_models

    names = list_models(args.pattern, pretrained=args.pretrained)
    for name in names:
        print(name)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="write a built-in dataset out as image files",
        description="Write a built-in dataset (from data that installed packages ship) as a folder of images: OUT/train/CLASS/*.png, OUT/test/CLASS/*.png.",
    )
    p.add_argument("name", help="built-in dataset name (digits, ...); `imgcls data list` lists them")
    p.add_argument("out", nargs="?", type=Path, help="folder to write (default: the imgcls cache)")
    p.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from imgcls.data.builtin import BUILTIN_DATASETS, materialize

    if args.name == "list":
        for name, text in BUILTIN_DATASETS.items():
            print(f"{name:10s} {text}")
        return 0
    path = materialize(args.name, args.out)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgcls",
        description="Image classification: check data, fine-tune, evaluate, compare, predict, export, serve, demo, "
        "push and pull model packages; zero-shot with CLIP; embeddings.",
        epilog="Quick start: imgcls train digits --model resnet18 --img-size 32 --hflip 0",
    )
    parser.add_argument("--version", action="version", version=f"imgcls {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for add in (
        _add_train,
        _add_evaluate,
        _add_compare,
        _add_predict,
        _add_export,
        _add_serve,
        _add_demo,
        _add_push,
        _add_pull,
        _add_check,
        _add_shard,
        _add_zeroshot,
        _add_embed,
        _add_models,
        _add_data,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    from imgcls.errors import USER_ERRORS

    try:
        return args.func(args, parser)
    except USER_ERRORS as err:
        print(f"imgcls {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `imgcls predict ... | head`: the reader left; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
