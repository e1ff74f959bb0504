"""Seconds per MNIST epoch of the hierarchical VAE (``hvae``) and the ladder VAE (``lvae``) at the thesis'
architecture (section 5.1.1; Sønderby et al. 2016, section 3): 5 latent layers 64-32-16-8-4, two-layer MLPs
512-256-128-64-32, leaky ReLU, Bernoulli x, batches of 256, Adam.

An epoch is what ``python -m dgmlab train`` does per epoch: ``60000 // 256 = 234`` training steps on dynamically
binarised batches (forward, backward, Adam update), then the test metrics on the 10 000 test points (``evaluate``
with ``eval_iw`` importance samples). With ``--max-batches B`` only ``B`` steps are timed (after ``--warmup``
untimed ones) and the training time is extrapolated to the full epoch; the evaluation is timed on
``--eval-points`` test points and extrapolated to 10 000.

    OMP_NUM_THREADS=1 python benchmarks/lvae_throughput.py --max-batches 20
    python benchmarks/lvae_throughput.py --models lvae --variants plain bn --threads 2 --json bench/lvae.json

Variants: ``plain`` (no BN: the plain VAE / LVAE), ``bn`` (BN on every hidden layer and on the latent mu / sigma
layers, warm-up on: the thesis' MNIST recipe). Needs MNIST (``DGMLAB_DATA``). Prints a markdown table; ``--json PATH``
also writes the numbers (atomically).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from dgmlab.checkpoints import atomic_write_json
from dgmlab.data import iterate_batches, load_data, make_config
from dgmlab.models import get_model_class
from dgmlab.runtime import get_device, machine_description

VARIANTS = {"plain": {}, "bn": {"batch_norm": True, "batch_norm_heads": True, "warmup_epochs": 200}}
TRAIN_POINTS, TEST_POINTS = 60_000, 10_000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["hvae", "lvae"], choices=["hvae", "lvae"])
    p.add_argument("--variants", nargs="+", default=["plain", "bn"], choices=sorted(VARIANTS))
    p.add_argument("--batch", type=int, default=256, help="batch size (thesis: 256)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="time only this many training steps and extrapolate to the epoch (default: the full epoch)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    p.add_argument("--eval-points", type=int, default=1000,
                   help="test points timed for evaluate(), extrapolated to 10 000 (default 1000)")
    p.add_argument("--eval-iw", type=int, default=10, help="importance samples of test_iw_bound (default 10)")
    p.add_argument("--iw", type=int, default=1, help="importance samples of the training bound (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, data, batch: int, steps: int, warmup: int, device: torch.device,
                  generator: torch.Generator) -> float:
    """Seconds for ``steps`` training steps (binarisation, forward, backward, Adam), after ``warmup`` untimed ones."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    batches = iterate_batches(data, "unsupervised", batch, generator, device=device)
    start = None
    for i, b in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        if i == warmup + steps:
            break
        out = model.step(b, epoch=0)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - start


def time_evaluation(model, x: torch.Tensor, device: torch.device) -> float:
    """Seconds for ``evaluate`` on ``x`` (eval mode, no gradients), as the training loop calls it every epoch."""
    _sync(device)
    start = time.perf_counter()
    model.evaluate(x)
    _sync(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    data = load_data("mnist", seed=args.seed)
    n_batches = len(data.x_train) // args.batch
    steps = min(args.max_batches or n_batches, n_batches - args.warmup)
    x_test = data.test_inputs()[:args.eval_points].to(device)
    rows = []
    for name in args.models:
        cls = get_model_class(name)
        for variant in args.variants:
            torch.manual_seed(args.seed)
            cfg = make_config(cls.Config, data, iw=args.iw, eval_iw=args.eval_iw, **VARIANTS[variant])
            model = cls(cfg).to(device)
            gen = torch.Generator().manual_seed(args.seed)
            train_s = time_training(model, data, args.batch, steps, args.warmup, device, gen)
            eval_s = time_evaluation(model, x_test, device)
            per_step = train_s / steps
            epoch_train = per_step * n_batches
            epoch_eval = eval_s * TEST_POINTS / len(x_test)
            rows.append({"model": name, "variant": variant, "params": sum(p.numel() for p in model.parameters()),
                         "iw": args.iw, "eval_iw": args.eval_iw, "batch": args.batch,
                         "threads": torch.get_num_threads(),
                         "device": str(device), "timed_steps": steps, "ms_per_step": 1000 * per_step,
                         "train_s_per_epoch": epoch_train, "eval_points_timed": len(x_test),
                         "eval_s_per_epoch": epoch_eval, "s_per_epoch": epoch_train + epoch_eval,
                         "extrapolated": steps < n_batches or len(x_test) < TEST_POINTS})
            print(f"  {name}/{variant}: {1000 * per_step:.0f} ms/step", file=sys.stderr, flush=True)
    print(f"\nHierarchical VAE / LVAE seconds per MNIST epoch ({n_batches} steps of {args.batch} + evaluate on "
          f"{TEST_POINTS} test points with eval_iw={args.eval_iw}; timed {steps} steps and {len(x_test)} test points; "
          f"{machine_description(device)})\n")
    print("| model | variant | params | threads | ms/step | train s/epoch | eval s/epoch | s/epoch | 2000 epochs (h) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['params'] / 1e6:.2f} M | {r['threads']} | "
              f"{r['ms_per_step']:.1f} | {r['train_s_per_epoch']:.1f} | {r['eval_s_per_epoch']:.1f} | "
              f"{r['s_per_epoch']:.1f} | {2000 * r['s_per_epoch'] / 3600:.0f} |")
    if args.json:
        atomic_write_json(args.json, {"benchmark": "lvae_throughput", "machine": machine_description(device),
                                      "torch": torch.__version__, "command": sys.argv, "rows": rows})
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
