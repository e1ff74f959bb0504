"""Seconds per MNIST epoch of FAME and FAME No Concatenation (thesis section 5.2; Appendix E, Table 1), for the
paper's architecture (``full``: 64-channel convolutions and PixelCNN) and the small CPU option set (``small``:
``channels=16``), and the cost of drawing an image.

An epoch is what ``python -m dgmlab train fame --data mnist`` does per epoch: ``60000 // batch`` training steps on
dynamically binarised 28x28 images (forward, backward, Adam update), then ``evaluate`` on the 10 000 test images
(the ELBO with per-layer KL; ``eval_iw`` importance samples on top when asked). With ``--max-batches B`` only ``B``
steps are timed (after ``--warmup`` untimed ones) and extrapolated to the epoch; the evaluation is timed on
``--eval-points`` test images and extrapolated to 10 000.

Sampling: ``sample(n)`` for ``--sample-images`` images at once (ancestral draw of ``z``, the decoder once, then the
PixelCNN once per pixel for FAME, once in all for No Concatenation), reported per image.

    OMP_NUM_THREADS=1 python benchmarks/fame_throughput.py --max-batches 3
    python benchmarks/fame_throughput.py --device cuda --max-batches 50 --sample-images 64 --json bench/fame.json

Needs MNIST (``DGMLAB_DATA``). Prints a markdown table; ``--json PATH`` also writes the numbers (atomically).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from dgmlab.checkpoints import atomic_write_json
from dgmlab.data import iterate_batches, load_data, make_config
from dgmlab.models import get_model_class
from dgmlab.models.fame import SMALL_CPU
from dgmlab.runtime import get_device, machine_description

RECIPES = {"full": {}, "small": dict(SMALL_CPU)}
TRAIN_POINTS, TEST_POINTS = 60_000, 10_000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["fame", "fame_noconcat"], choices=["fame", "fame_noconcat"])
    p.add_argument("--recipes", nargs="+", default=["full", "small"], choices=sorted(RECIPES),
                   help="full: the paper's channels; small: the CPU option set (channels=16)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the model's, 128)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="time only this many training steps and extrapolate to the epoch (default: the full epoch)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (default 1)")
    p.add_argument("--eval-points", type=int, default=200,
                   help="test images timed for evaluate(), extrapolated to 10 000 (default 200)")
    p.add_argument("--eval-iw", type=int, default=0, help="importance samples of test_iw_bound (default 0: off)")
    p.add_argument("--sample-images", type=int, default=2, help="images drawn at once to time sampling (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, data, batch: int, steps: int, warmup: int, device: torch.device,
                  generator: torch.Generator, lr: float) -> float:
    """Seconds for ``steps`` training steps (binarisation, forward, backward, Adam), after ``warmup`` untimed ones."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
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


def timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    data = load_data("mnist", seed=args.seed)  # all 784 pixels: FAME models whole images
    x_test = data.test_inputs()[:args.eval_points].to(device)
    rows = []
    for name in args.models:
        cls = get_model_class(name)
        recipe_model, train = cls.recipe("mnist")
        batch = args.batch or train["batch_size"]
        n_batches = len(data.x_train) // batch
        steps = min(args.max_batches or n_batches, n_batches - args.warmup)
        for recipe in args.recipes:
            torch.manual_seed(args.seed)
            cfg = make_config(cls.Config, data, **{**recipe_model, **RECIPES[recipe], "eval_iw": args.eval_iw})
            model = cls(cfg).to(device)
            gen = torch.Generator().manual_seed(args.seed)
            train_s = time_training(model, data, batch, steps, args.warmup, device, gen, train["lr"])
            eval_s = timed(lambda: model.evaluate(x_test), device)
            torch.manual_seed(args.seed)
            sample_s = timed(lambda: model.sample(args.sample_images), device)
            per_step = train_s / steps
            epoch_train = per_step * n_batches
            epoch_eval = eval_s * TEST_POINTS / len(x_test)
            rows.append({"model": name, "recipe": recipe, "channels": cfg.channels,
                         "params": sum(p.numel() for p in model.parameters()), "batch": batch,
                         "threads": torch.get_num_threads(), "device": str(device), "timed_steps": steps,
                         "ms_per_step": 1000 * per_step, "train_s_per_epoch": epoch_train,
                         "eval_points_timed": len(x_test), "eval_iw": args.eval_iw, "eval_s_per_epoch": epoch_eval,
                         "s_per_epoch": epoch_train + epoch_eval, "sample_images": args.sample_images,
                         "sample_s_per_image": sample_s / args.sample_images,
                         "extrapolated": steps < n_batches or len(x_test) < TEST_POINTS})
            print(f"  {name}/{recipe}: {1000 * per_step:.0f} ms/step, {sample_s / args.sample_images:.2f} s/image",
                  file=sys.stderr, flush=True)
    print(f"\nFAME seconds per MNIST epoch (60 000 // batch steps + evaluate on {TEST_POINTS} test images, "
          f"eval_iw={args.eval_iw}; timed {rows[0]['timed_steps'] if rows else 0} steps and {len(x_test)} test "
          f"images, extrapolated; {machine_description(device)})\n")
    print("| model | recipe | channels | params | batch | threads | ms/step | train s/epoch | eval s/epoch | s/epoch "
          "| sampling s/image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['recipe']} | {r['channels']} | {r['params'] / 1e6:.2f} M | {r['batch']} | "
              f"{r['threads']} | {r['ms_per_step']:.0f} | {r['train_s_per_epoch']:.0f} | {r['eval_s_per_epoch']:.0f} "
              f"| {r['s_per_epoch']:.0f} | {r['sample_s_per_image']:.3g} |")
    if args.json:
        atomic_write_json(args.json, {"benchmark": "fame_throughput", "machine": machine_description(device),
                                      "torch": torch.__version__, "command": sys.argv, "rows": rows})
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
