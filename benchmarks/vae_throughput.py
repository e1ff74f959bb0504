"""VAE training throughput: examples per second for the 784-500-500-50 VAE of chapter 3 (reproduction notes
rn-vae-settings).

Encoder 784-500-500 -> z 50, mirrored decoder 50-500-500-784 (Bernoulli), Adam, batch 100 by default. A few warm-up
steps are discarded, then ``--steps`` optimisation steps (forward, backward, Adam update) are timed.

    OMP_NUM_THREADS=1 python benchmarks/vae_throughput.py --threads 1 --json bench/vae_1thread.json
    python benchmarks/vae_throughput.py --threads 2 --iw 1 5

Data: random binary images, or dynamically binarised MNIST when ``--data mnist`` (or ``--data auto`` with
``DGMLAB_DATA`` set). Prints a markdown table; ``--json PATH`` also writes the numbers (atomically).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from dgmlab.checkpoints import atomic_write_json
from dgmlab.models.vae import VAE, VAEConfig
from dgmlab.runtime import get_device, machine_description


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps (default 5)")
    p.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--iw", type=int, nargs="+", default=[1], help="importance samples per row (1 = VAE)")
    p.add_argument("--data", choices=["auto", "random", "mnist"], default="auto",
                   help="input data; auto = MNIST when DGMLAB_DATA is set, else random binary images")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_inputs(kind: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    """``n`` binary 784-pixel images: MNIST intensities binarised once, or fair coin flips."""
    if kind == "mnist" or (kind == "auto" and os.environ.get("DGMLAB_DATA")):
        from dgmlab.data import binarize, load_data

        x = load_data("mnist", n_train=n).x_train
        return binarize(x, gen), "mnist (binarised)"
    return (torch.rand(n, 784, generator=gen) < 0.5).float(), "random binary"


def time_steps(model: VAE, x: torch.Tensor, batch: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` full optimisation steps."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_batches = len(x) // batch

    def run(count: int) -> None:
        for i in range(count):
            xb = x[(i % n_batches) * batch:(i % n_batches + 1) * batch]
            out = model.step({"x": xb}, epoch=0)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    run(steps)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    x, data_name = load_inputs(args.data, 10 * args.batch, gen)
    x = x.to(device)
    rows = []
    for iw in args.iw:
        model = VAE(VAEConfig(x_dim=784, z_dim=50, hidden=(500, 500), iw=iw)).to(device)
        time_steps(model, x, args.batch, args.warmup, device)
        times = [time_steps(model, x, args.batch, args.steps, device) for _ in range(args.repeats)]
        seconds = statistics.median(times)
        rows.append({"architecture": "784-500-500-50 (mirrored decoder)", "iw": iw, "batch": args.batch,
                     "threads": torch.get_num_threads(), "device": str(device),
                     "examples_per_s": args.batch * args.steps / seconds, "ms_per_step": 1000 * seconds / args.steps,
                     "repeats_s": [round(t, 4) for t in times]})
    print(f"VAE training throughput ({data_name} data, {args.steps} timed steps x {args.repeats} repeats, median; "
          f"{machine_description(device)})\n")
    print("| architecture | IW | batch | threads | device | examples/s | ms/step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['architecture']} | {r['iw']} | {r['batch']} | {r['threads']} | {r['device']} | "
              f"{r['examples_per_s']:.0f} | {r['ms_per_step']:.1f} |")
    if args.json:
        atomic_write_json(args.json, {"benchmark": "vae_throughput", "machine": machine_description(device),
                                      "data": data_name, "torch": torch.__version__, "command": sys.argv,
                                      "steps": args.steps, "warmup": args.warmup, "rows": rows})
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
