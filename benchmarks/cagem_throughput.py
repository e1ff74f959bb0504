"""Seconds per MNIST epoch of CaGeM with the thesis' recipe (section 4.3; Appendix C section 5): 784 pixels, dim
z1 = 64, dim z2 = 32, 1024-1024 networks on the x side and 512-512 between z1/y and z2 (reproduction notes: CaGeM
network widths), ReLU + BN, 10 clusters summed out in one batched pass, batches of 100 unlabelled + the 100 labelled
points (MNIST-100), Adam.

An epoch is what ``python -m dgmlab train cagem --data mnist --labels 100`` does per epoch: ``60000 // 100 = 600``
training steps on dynamically binarised batches (forward, backward, Adam update), then the test metrics on the
10 000 test points (``evaluate``: the bound and both classifiers). With ``--max-batches B`` only ``B`` steps are
timed (after ``--warmup`` untimed ones) and the training time is extrapolated to the full epoch; the evaluation is
timed on ``--eval-points`` test points and extrapolated to 10 000.

    OMP_NUM_THREADS=1 python benchmarks/cagem_throughput.py --max-batches 10
    python benchmarks/cagem_throughput.py --threads 2 --json bench/cagem.json

Needs MNIST (``DGMLAB_DATA``). Prints a markdown table; ``--json PATH`` also writes the numbers (atomically).
"""

from __future__ import annotations

import argparse
import time

import torch

from dgmlab.checkpoints import atomic_write_json
from dgmlab.data import iterate_batches, load_data, make_config
from dgmlab.models import get_model_class
from dgmlab.runtime import get_device, machine_description

TRAIN_POINTS, TEST_POINTS = 60_000, 10_000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, default=100, help="labelled MNIST points (default 100)")
    p.add_argument("--n-clusters", type=int, default=0,
                   help="0: one cluster per class (semi-supervised); K >= 2: the unsupervised CaGeM-0 with K clusters")
    p.add_argument("--batch", type=int, default=100, help="unlabelled batch size (default 100)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="time only this many training steps and extrapolate to the epoch (default: the full epoch)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    p.add_argument("--eval-points", type=int, default=500,
                   help="test points timed for evaluate(), extrapolated to 10 000 (default 500)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    torch.manual_seed(args.seed)
    data = load_data("mnist", labels=args.labels, seed=args.seed)
    cls = get_model_class("cagem")
    model_opts, train = cls.recipe("mnist")
    model = cls(make_config(cls.Config, data, **model_opts, n_clusters=args.n_clusters)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=train["lr"])
    steps_per_epoch = len(data.x_train) // args.batch
    steps = min(args.max_batches or steps_per_epoch, steps_per_epoch - args.warmup)
    model.train()
    generator = torch.Generator().manual_seed(args.seed)
    batches = iterate_batches(data, "semi-supervised", args.batch, generator, train["labelled_batch_size"], device)
    start = None
    for i, b in enumerate(batches):
        if i == args.warmup:
            _sync(device)
            start = time.perf_counter()
        if i == args.warmup + steps:
            break
        out = model.step(b, epoch=0)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    _sync(device)
    train_s = time.perf_counter() - start
    x_test = data.test_inputs()[:args.eval_points].to(device)
    t0 = time.perf_counter()
    model.evaluate(x_test, data.y_test[:args.eval_points].to(device))
    _sync(device)
    eval_s = (time.perf_counter() - t0) * TEST_POINTS / len(x_test)
    per_step = train_s / steps
    row = {"model": "cagem", "labels": args.labels, "clusters": model.n_clusters, "threads": args.threads,
           "timed_steps": steps, "s_per_step": round(per_step, 3),
           "train_s_per_epoch": round(per_step * steps_per_epoch, 1), "eval_s_per_epoch": round(eval_s, 1),
           "s_per_epoch": round(per_step * steps_per_epoch + eval_s, 1),
           "extrapolated": steps < steps_per_epoch}
    machine = machine_description(device)
    keys = list(row)
    print(f"machine: {machine}\n")
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    if args.json:
        atomic_write_json(args.json, {"benchmark": "CaGeM MNIST seconds per epoch", "machine": machine,
                                      "batch": f"{args.batch} unlabelled + {train['labelled_batch_size']} labelled",
                                      "rows": [row]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
