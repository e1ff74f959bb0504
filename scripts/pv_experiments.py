"""The three experiments of thesis chapter 6 on the simulated PV plant, written as small JSON files that the
chapter's notebooks read at the default budget (one file per trained model, with its command, seed, time and
machine). Finished files are skipped, so an interrupted run continues where it stopped.

    python scripts/pv_experiments.py supervised             # (i)   MLR, MLP, SDGM x simple/complex x 5 folds
    python scripts/pv_experiments.py semi                   # (ii)  label budgets x draws x models x inputs
    python scripts/pv_experiments.py progressive            # (iii) classes arrive one at a time (complex inputs)
    python scripts/pv_experiments.py semi --budgets 100 1500 --draws 2 --out /tmp/pv-semi   # a smaller grid

Every model is the ``pv`` recipe of ``python -m dgmlab list`` trained with :mod:`dgmlab.monitoring`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dgmlab.checkpoints import atomic_write_json
from dgmlab.data import ALL_LABELS
from dgmlab.monitoring import (BUDGETS, INPUTS, MODELS, PROGRESSIVE_LABELS, PROGRESSIVE_STEPS, elbo_scores,
                               predict, progressive_data, roc_curve, run_fold, train_model)
from dgmlab.runtime import machine_description

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = {"supervised": "dgmlab/pretrained/pv-supervised", "semi": "dgmlab/pretrained/pv-semi",
               "progressive": "dgmlab/pretrained/pv-progressive"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("experiment", choices=sorted(DEFAULT_OUT))
    p.add_argument("--out", default=None, help="folder of the JSON files (default dgmlab/pretrained/pv-EXPERIMENT)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    p.add_argument("--folds", type=int, default=5, help="(i): Monte Carlo folds, seeds 0..F-1 (default 5)")
    p.add_argument("--first-fold", type=int, default=0,
                   help="(i): start at this fold (a second process can take the last folds; finished files are skipped)")
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="(ii): label budgets")
    p.add_argument("--draws", type=int, default=3, help="(ii): label draws (and splits) per budget, seeds 0..D-1")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="(iii): seed of the split and the labels")
    return p.parse_args(argv)


def _record(args, extra: dict) -> dict:
    return {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "machine": machine_description(
        torch.device("cpu")), "torch_threads": torch.get_num_threads(), **extra}


def supervised(args, out: Path) -> None:
    for seed in range(args.first_fold, args.folds):
        for inputs in args.inputs:
            for model in args.models:
                _fold(args, out, model, inputs, ALL_LABELS, seed)


def semi(args, out: Path) -> None:
    for seed in range(args.draws):
        for labels in args.budgets:
            for inputs in args.inputs:
                for model in args.models:
                    _fold(args, out, model, inputs, labels, seed)


def _fold(args, out: Path, model: str, inputs: str, labels, seed: int) -> None:
    path = out / f"{model}-{inputs}-labels{labels}-seed{seed}.json"
    if path.exists():
        return
    result = run_fold(model, inputs, labels, seed, steps=args.steps)
    atomic_write_json(path, _record(args, result.to_dict()))
    print(f"{path.name}: accuracy {result.accuracy:.2f} % in {result.time_s:.0f} s", flush=True)


def progressive(args, out: Path) -> None:
    for step in range(1, PROGRESSIVE_STEPS + 1):
        for inputs in args.inputs:
            path = out / f"step{step}-{inputs}-seed{args.seed}.json"
            if path.exists():
                continue
            start = time.perf_counter()
            data, seen = progressive_data(step, inputs, args.seed)
            y_test = data.y_test.numpy()
            included = np.isin(y_test, seen)
            record = {"step": step, "inputs": inputs, "seed": args.seed, "classes_seen": [data.class_names[c]
                      for c in seen], "labelled_per_new_class": PROGRESSIVE_LABELS,
                      "n_train": len(data.x_train), "n_labelled": data.n_labelled}
            for name in ("mlp", "sdgm"):
                if name not in args.models:
                    continue
                model, _ = train_model(name, data, seed=args.seed, steps=args.steps)
                pred = predict(model, data.x_test)
                record[name] = {"accuracy_all": float(100 * (pred == y_test).mean()),
                                "accuracy_seen": float(100 * (pred[included] == y_test[included]).mean())}
                if name == "sdgm":
                    score = elbo_scores(model, data.x_test)
                    train_score = elbo_scores(model, data.x_train)
                    _, _, auc = roc_curve(score[included], score[~included])
                    record[name].update({"elbo_seen": float(score[included].mean()),
                                         "elbo_unseen": float(score[~included].mean()),
                                         "elbo_train_p01": float(np.percentile(train_score, 1)),
                                         "auc_unseen": auc})
            record["time_s"] = round(time.perf_counter() - start, 2)
            atomic_write_json(path, _record(args, record))
            print(f"{path.name}: {json.dumps({k: record[k] for k in ('mlp', 'sdgm') if k in record})}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out or ROOT / DEFAULT_OUT[args.experiment])
    out.mkdir(parents=True, exist_ok=True)
    {"supervised": supervised, "semi": semi, "progressive": progressive}[args.experiment](args, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
