"""Command line: ``python -m dgmlab train MODEL --data DATA ...`` and ``python -m dgmlab eval CHECKPOINT``.

Every run writes ``DIR/metrics.json`` (model, data, command, seed, device, machine, wall-clock time, per-epoch history
and final metrics) and ``DIR/model.pt`` (an atomic checkpoint that ``--resume`` continues from).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from dgmlab.checkpoints import atomic_write_json, load_checkpoint, load_model
from dgmlab.data import DATASETS, load_data, make_config
from dgmlab.models import available_models, get_model_class
from dgmlab.reporting import sessions_of
from dgmlab.runtime import device_speed, get_device, machine_description, seed_everything
from dgmlab.training import TrainConfig, evaluate, fit

EXAMPLES = """examples:
  python -m dgmlab train mlp --data halfmoons --epochs 20 --out runs/mlp-moons
  python -m dgmlab train mlp --data mnist --labels 100 --epochs 50
  python -m dgmlab train adgm --data mnist --labels 100 --epochs 200 --out runs/adgm
  python -m dgmlab eval runs/adgm/model.pt --iw 5000
"""


def _model_help() -> str:
    lines = []
    for name in available_models():
        doc = (get_model_class(name).__doc__ or "").strip().splitlines()
        lines.append(f"  {name:<10} {doc[0] if doc else ''}")
    return "\n".join(lines)


def recipes_text() -> str:
    """Every model's per-dataset recipe, one block per (model, dataset)."""
    lines = []
    for name in available_models():
        cls = get_model_class(name)
        for data, r in cls.recipes.items():
            model, train = cls.recipe(data)
            lines.append(f"  {name} --data {data}: {r.get('source', '')}")
            if model:
                lines.append("      model: " + ", ".join(f"{k}={v}" for k, v in model.items()))
            lines.append("      train: " + ", ".join(f"{k}={v}" for k, v in train.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    datasets = "\n".join(f"  {k:<10} {v}" for k, v in DATASETS.items())
    parser = argparse.ArgumentParser(
        prog="python -m dgmlab",
        description="Train and evaluate the models of 'Deep Generative Models for Semi-Supervised Machine Learning'.",
        epilog=f"models:\n{_model_help()}\n\ndatasets:\n{datasets}\n\n{EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write DIR/metrics.json and DIR/model.pt",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"models:\n{_model_help()}\n\ndatasets:\n{datasets}")
    t.add_argument("model", help="model name (see the list below)")
    t.add_argument("--data", required=True, help="dataset name (see the list below)")
    t.add_argument("--labels", type=_labels_arg, default=None,
                   help="size of the class-balanced labelled subset, or 'all' (every training point labelled)")
    t.add_argument("--inputs", choices=("simple", "complex"), default=None,
                   help="pv: the sensors the model sees: simple = (I, V), complex = all six (default simple)")
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's own)")
    t.add_argument("--seed", type=int, default=0, help="random seed (weights, data order, labels, samples)")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (cuda when available)")
    t.add_argument("--out", default=None, help="output folder (default runs/MODEL-DATA-seedS)")
    t.add_argument("--batch-size", type=int, default=None, help="unlabelled examples per batch")
    t.add_argument("--labelled-batch-size", type=int, default=None, help="labelled examples per batch")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    t.add_argument("--iw", type=int, default=None, help="importance samples for training (models with an 'iw' option)")
    t.add_argument("--trim", action=argparse.BooleanOptionalAction, default=None,
                   help="MNIST: keep the 444 pixels with std > 0.1 (default: the model's choice)")
    t.add_argument("--n-train", type=int, default=None, help="use only the first N training points")
    t.add_argument("--n-test", type=int, default=None, help="use only the first N test points")
    t.add_argument("--max-batches", type=int, default=None, help="cap on batches per epoch")
    t.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    t.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop after the epoch that passes this much wall-clock time (evaluated and saved; "
                        "continue later with --resume)")
    t.add_argument("--clip-grad-value", type=float, default=None,
                   help="clip every gradient element to [-v, v] after the norm clip (the authors' code: 1)")
    t.add_argument("--weight-prior", action=argparse.BooleanOptionalAction, default=None,
                   help="add a N(0,1) log-prior on the weight matrices, divided by the training-set size")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model option, e.g. --set z_dim=2 --set hidden=(256,256)")
    t.add_argument("--resume", action="store_true", help="continue from DIR/model.pt")
    t.add_argument("--fresh", action="store_true", help="overwrite an existing run in DIR")
    t.add_argument("--no-progress", action="store_true", help="print one line per epoch instead of progress bars")

    e = sub.add_parser("eval", help="evaluate a checkpoint: test metrics and the importance-weighted log-likelihood")
    e.add_argument("checkpoint", help="path to a model.pt written by `train`")
    e.add_argument("--iw", type=int, default=5000, help="importance samples for log p(x) (default 5000)")
    e.add_argument("--chunk", type=int, default=500, help="importance samples per chunk (memory bound)")
    e.add_argument("--n-test", type=int, default=None, help="evaluate on the first N test points only")
    e.add_argument("--device", default="auto", help="cpu, cuda or auto")
    e.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples")
    e.add_argument("--out", default=None, help="metrics.json to update (default: next to the checkpoint)")
    e.add_argument("--per-point", action="store_true",
                   help="also record each test point's log p(x) estimate, for paired comparisons of two runs "
                        "evaluated on the same points (dgmlab.lvae_figures.paired_difference)")

    sub.add_parser("list", help="list the models, the datasets and the thesis' recipe for each pair")
    return parser


def _labels_arg(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def _parse_overrides(items: list[str], config_cls=None) -> dict:
    """``--set KEY=VALUE`` items -> options. VALUE is a Python literal (``3``, ``0.5``, ``(100,100)``, ``True``,
    ``None``); a bare word such as ``xzy`` is a string. With ``config_cls``, a value whose type cannot fit the
    option's default (a string for a number, say) is refused with one line naming the option and the fix."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)} if config_cls else {}
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --set expects KEY=VALUE, got {item!r}")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            if not raw.replace("_", "").replace("-", "").isalnum():
                raise SystemExit(f"error: cannot parse --set {key}={raw}: write a Python literal, e.g. "
                                 f"--set hidden=(100,100) or --set beta=0.5") from None
            value = raw
        if key in fields:
            default = fields[key].default
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            wrong = ((numeric and (isinstance(value, bool) or not isinstance(value, (int, float))))
                     or (isinstance(default, bool) and not isinstance(value, bool))
                     or (isinstance(default, tuple) and not isinstance(value, (tuple, list, int))))
            if wrong:
                raise SystemExit(f"error: --set {key}={raw} does not fit the option {key} (default {default!r}); "
                                 f"give a value of that kind")
            if isinstance(default, tuple) and isinstance(value, int):
                value = (value,)
        out[key] = value
    return out


def _check_writable(out: Path) -> None:
    """Fail before any training when the run folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SystemExit(f"error: cannot write to --out {out} ({err.strerror or err}); choose a folder you can "
                         "write to") from None


def _train(args) -> int:
    cls = get_model_class(args.model)
    if args.data not in DATASETS:
        raise ValueError(f"unknown dataset {args.data!r}; available datasets: {', '.join(sorted(DATASETS))}")
    for flag in ("epochs", "batch_size", "labelled_batch_size", "max_batches", "n_train", "n_test", "iw"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise SystemExit(f"error: --lr must be positive, got {args.lr}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise SystemExit(f"error: --time-limit must be a positive number of seconds, got {args.time_limit}")
    if args.eval_every < 1:
        raise SystemExit(f"error: --eval-every must be a positive integer, got {args.eval_every}")
    overrides = _parse_overrides(args.set, cls.Config)
    recipe_model, defaults = cls.recipe(args.data)
    out = Path(args.out or f"runs/{args.model}-{args.data}-seed{args.seed}")
    _check_writable(out)
    trim = args.trim if args.trim is not None else getattr(cls, "trim_mnist", False)
    if args.inputs is not None and args.data != "pv":
        raise SystemExit(f"error: --inputs selects the sensors of --data pv; {args.data} has none (drop --inputs)")
    if isinstance(args.labels, int) and args.labels < 1:
        raise SystemExit(f"error: --labels must be a positive integer or 'all', got {args.labels}")
    data_info = {"name": args.data, "labels": args.labels, "seed": args.seed, "trim": bool(trim),
                 "n_train": args.n_train, "n_test": args.n_test}
    if args.data == "pv":
        data_info["inputs"] = args.inputs or "simple"
    data = load_data(args.data, labels=args.labels, seed=args.seed, trim=trim and args.data == "mnist",
                     n_train=args.n_train, n_test=args.n_test, inputs=data_info.get("inputs"))
    if cls.setting == "supervised":
        data = data.labelled_only()  # a supervised baseline sees only the labelled points
    overrides = {**recipe_model, **overrides}
    if args.iw is not None:
        overrides["iw"] = args.iw
    device = get_device(args.device)
    seed_everything(args.seed)
    model = cls(make_config(cls.Config, data, **overrides)).to(device)

    given = {"epochs": args.epochs, "batch_size": args.batch_size, "labelled_batch_size": args.labelled_batch_size,
             "lr": args.lr, "max_batches": args.max_batches, "clip_grad_value": args.clip_grad_value,
             "weight_prior": args.weight_prior}
    train_kwargs = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    cfg = TrainConfig(seed=args.seed, eval_every=args.eval_every, progress=False if args.no_progress else None,
                      time_limit_s=args.time_limit,
                      **train_kwargs)

    ckpt = out / "model.pt"
    if ckpt.exists():
        if args.fresh:
            ckpt.unlink()
        elif not args.resume:
            raise SystemExit(f"error: {ckpt} already exists; pass --resume to continue it or --fresh to start over")
        else:
            load_checkpoint(ckpt, expect=args.model)
    command = "python -m dgmlab " + " ".join(shlex.quote(a) for a in args.argv)
    previous = read_json(out / "metrics.json") if args.resume and (out / "metrics.json").exists() else None
    start = time.perf_counter()

    def write_metrics(history: list[dict]) -> dict:
        # Written after every epoch, so a long run that is stopped still leaves its measured curve behind.
        session = {"command": command, "epochs_done": len(history), "device": str(device),
                   "machine": machine_description(device), "wall_clock_s": round(time.perf_counter() - start, 2)}
        metrics = {
            "model": args.model,
            "data": args.data,
            "labels": args.labels,
            **with_sessions(previous, session),
            "seed": args.seed,
            "device": str(device),
            "machine": machine_description(device),
            "train_time_s": history[-1]["time_s"] if history else 0.0,
            "epochs_done": len(history),
            "config": model.config_dict(),
            "train_config": dataclasses.asdict(cfg),
            "history": history,
            "final": history[-1] if history else {},
        }
        atomic_write_json(out / "metrics.json", metrics)
        return metrics

    history = fit(model, data, cfg, checkpoint=ckpt, data_info=data_info,
                  on_epoch=lambda epoch, record: write_metrics(model.history))
    metrics = write_metrics(history)
    print(f"wrote {out / 'metrics.json'} and {ckpt}")
    print(json.dumps(metrics["final"], indent=2))
    return 0


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read {path} ({e}); delete it or start the run with --fresh") from None


def with_sessions(previous: dict | None, session: dict) -> dict:
    """Provenance of a run that was stopped and resumed: ``sessions`` lists every command that trained it (with its
    epochs, device, machine and wall-clock time), ``command`` is the first one and ``wall_clock_s`` the total.

    ``previous`` is the run's earlier ``metrics.json`` (``None`` for a fresh run); one written before sessions were
    recorded counts as a single session. Its ``eval`` record is not carried over: it describes older weights."""
    sessions = (sessions_of(previous) if previous else []) + [session]
    return {"command": sessions[0]["command"], "sessions": sessions,
            "wall_clock_s": round(sum(s.get("wall_clock_s") or 0.0 for s in sessions), 2)}


def _eval(args) -> int:
    state = load_checkpoint(args.checkpoint)
    info = state.get("data") or {}
    if not info:
        raise SystemExit(f"error: {args.checkpoint} does not record its dataset; it was not written by `train`")
    device = get_device(args.device)
    model = load_model(args.checkpoint, device=device)
    n_test = args.n_test if args.n_test is not None else info.get("n_test")
    data = load_data(info["name"], labels=info.get("labels"), seed=info.get("seed", 0),
                     trim=info.get("trim", False) and info["name"] == "mnist", n_train=info.get("n_train"),
                     n_test=n_test, inputs=info.get("inputs"))
    seed_everything(args.seed)
    start = time.perf_counter()
    results = evaluate(model, data)
    if hasattr(model, "log_likelihood"):
        x = data.test_inputs().to(device)
        with torch.no_grad(), device_speed(device):
            ll = torch.cat([model.log_likelihood(xb, k=args.iw, chunk=args.chunk) for xb in x.split(100)])
        results[f"test_log_likelihood_iw{args.iw}"] = ll.mean().item()
        # the spread over test points: what evaluating on a subset (--n-test) costs in precision
        if len(ll) > 1:
            results["test_log_likelihood_sem"] = (ll.std() / len(ll) ** 0.5).item()
        if args.per_point:  # 4 decimals: far below the Monte Carlo error of one point's estimate
            results["test_log_likelihood_per_point"] = [round(v, 4) for v in ll.tolist()]
    wall = time.perf_counter() - start
    record = {"command": "python -m dgmlab " + " ".join(shlex.quote(a) for a in args.argv),
              "checkpoint": str(args.checkpoint), "iw": args.iw, "seed": args.seed, "device": str(device),
              "machine": machine_description(device), "n_test": len(data.x_test),
              "wall_clock_s": round(wall, 2), **results}
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "metrics.json"
    metrics = json.loads(out.read_text()) if out.exists() else {"model": state["model"], "data": info["name"]}
    metrics["eval"] = record
    atomic_write_json(out, metrics)
    print(json.dumps(record, indent=2))
    print(f"updated {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        print(f"models:\n{_model_help()}\n\ndatasets:")
        for k, v in DATASETS.items():
            print(f"  {k:<10} {v}")
        print(f"\nrecipes (what `train MODEL --data DATA` uses when no option is given):\n{recipes_text()}")
        return 0
    except (ValueError, TypeError, RuntimeError, ArithmeticError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
