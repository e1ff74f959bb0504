"""ADGM training throughput and half-moons time-to-accuracy (thesis section 4.2; reproduction notes rn-adgm, T4).

Default mode: training steps per second of the ADGM (and its relatives) with the thesis' MNIST architecture --
``x`` 444 inputs, every network 500-500 ReLU, ``a`` and ``z`` 100-d, batches of 100 unlabelled + 100 labelled points,
the 10 classes summed out -- on synthetic binary inputs (the cost does not depend on the pixel values). Throughput
counts unlabelled plus labelled examples. For comparison it also times the unlabelled bound computed with a Python
loop over the classes instead of the one batched pass over the class-tiled batch (thesis section 4.2, remarks).

``--halfmoons``: wall-clock time and epochs for the half-moons ADGM (reproduction notes T4: hidden 100-100,
``a = z = 10``, Adam 3e-4, batches of 100 unlabelled + the 6 labelled points) to reach a test error of at most
``--target`` percent (by default the Bayes error of the test set plus one point: with noise 0.2 the moons overlap, so
1 % is impossible), evaluated after every epoch on the 10 000 test points; the run is capped at ``--max-epochs``.

    python benchmarks/adgm_throughput.py                 # markdown table
    python benchmarks/adgm_throughput.py --json          # the same numbers as JSON
    python benchmarks/adgm_throughput.py --halfmoons     # time to the Bayes error + 1 point on the half-moons
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from dgmlab.models import get_model_class
from dgmlab.objectives.semisupervised import categorical_entropy, one_hot
from dgmlab.runtime import get_device, machine_description, seed_everything

MNIST_ARCH = dict(x_dim=444, n_classes=10, likelihood="bernoulli", hidden=(500, 500), z_dim=100, a_dim=100,
                  n_train=60000, n_labelled=100)


def looped_unlabelled_bound(model, x: torch.Tensor) -> torch.Tensor:
    """U(x) with one network pass per class (the slow way the batched implementation avoids); ADGM-family only."""
    a, log_qa = model.sample_a(x, 1)
    log_q_y = model.q_y(a, x).logits
    total = categorical_entropy(log_q_y)
    for y in range(model.config.n_classes):
        t = model._joint_terms(x, a, one_hot(torch.full((len(x),), y, device=x.device), model.config.n_classes, x),
                               None)
        f = t["log_px"] + t["log_pa"] - math.log(model.config.n_classes) + t["log_pz"] - log_qa - t["log_qz"]
        total = total + log_q_y[..., y].exp() * f
    return total.mean(0)


def time_steps(model, batch: dict, steps: int, warmup: int, looped: bool = False) -> float:
    """Seconds per training step (forward, backward, Adam), after ``warmup`` untimed steps."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    for i in range(warmup + steps):
        if i == warmup:
            if batch["x_u"].is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        if looped:
            lab = model.labelled_bound(batch["x_l"], batch["y_l"])
            from dgmlab.objectives.semisupervised import classification_loss

            ce = classification_loss(lab.class_log_probs, batch["y_l"])
            loss = -((lab.value - model.alpha * ce).mean() + looped_unlabelled_bound(model, batch["x_u"]).mean())
        else:
            loss = model.step(batch, 0).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    if batch["x_u"].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def throughput(device: torch.device, steps: int, warmup: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    batch = {"x_u": torch.rand(100, 444, generator=gen).bernoulli().to(device),
             "x_l": torch.rand(100, 444, generator=gen).bernoulli().to(device),
             "y_l": torch.arange(100).remainder(10).to(device)}
    rows = []
    for name, looped in [("adgm", False), ("adgm", True), ("sdgm", False), ("adgm_det", False), ("m2", False)]:
        cls = get_model_class(name)
        arch = {k: v for k, v in MNIST_ARCH.items() if k != "a_dim" or name != "m2"}
        seed_everything(0)
        model = cls(cls.Config(**arch)).to(device)
        sec = time_steps(model, batch, steps, warmup, looped)
        rows.append({"model": name, "sum over classes": "Python loop" if looped else "batched (tiled)",
                     "ms/step": round(1000 * sec, 1), "examples/s": round(200 / sec, 1)})
    return rows


def halfmoons(device: torch.device, target: float | None, max_epochs: int, seed: int) -> dict:
    from dgmlab.data import iterate_batches, load_data, make_config
    from dgmlab.data.halfmoons import bayes_error, semi_supervised_shift

    seed_everything(seed)
    data = load_data("halfmoons", labels=6)
    floor = bayes_error(data.x_test, data.y_test, noise=0.2, shift=semi_supervised_shift())
    if target is None:  # 0 % is out of reach: the moons overlap, so aim at one point above the best possible error
        target = round(floor + 1.0, 2)
    elif target < floor:
        raise SystemExit(f"error: --target {target} % is below the Bayes error of this test set ({floor:.2f} %), "
                         "which no classifier can beat; choose a larger target or leave it out (Bayes error + 1)")
    cls = get_model_class("adgm")
    model = cls(make_config(cls.Config, data, hidden=(100, 100), z_dim=10, a_dim=10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    gen = torch.Generator().manual_seed(seed)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    train_s, errors, reached = 0.0, [], None
    start = time.perf_counter()
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        model.train()
        for batch in iterate_batches(data, "semi-supervised", 100, gen, 100, device):
            out = model.step(batch, epoch)
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        train_s += time.perf_counter() - t0
        errors.append(round(model.evaluate(x_test, y_test)["test_error"], 2))
        if errors[-1] <= target:
            reached = epoch + 1
            break
    return {"bayes_error_%": round(floor, 2), "target_test_error_%": target, "reached_at_epoch": reached, "epochs_run": len(errors),
            "train_time_s": round(train_s, 1), "wall_clock_s": round(time.perf_counter() - start, 1),
            "test_error_per_epoch_%": errors, "best_test_error_%": min(errors)}


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--halfmoons", action="store_true", help="time the half-moons ADGM to --target %% test error")
    p.add_argument("--target", type=float, default=None,
                   help="half-moons target test error in %% (default: the Bayes error of the test set + 1 point)")
    p.add_argument("--max-epochs", type=int, default=50, help="half-moons cap on epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    machine = machine_description(device)
    if args.halfmoons:
        result = {"benchmark": "halfmoons ADGM time to target", "machine": machine,
                  **halfmoons(device, args.target, args.max_epochs, args.seed)}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"machine: {machine}\n")
            print(markdown([{k: v for k, v in result.items() if k not in ("machine", "test_error_per_epoch_%")}]))
            print(f"\ntest error per epoch (%): {result['test_error_per_epoch_%']}")
        return 0
    rows = throughput(device, args.steps, args.warmup)
    if args.json:
        print(json.dumps({"benchmark": "ADGM MNIST-architecture training throughput", "machine": machine,
                          "batch": "100 unlabelled + 100 labelled, 10 classes", "rows": rows}, indent=2))
    else:
        print(f"machine: {machine}; batch = 100 unlabelled + 100 labelled, x 444, 500-500 networks, a = z = 100\n")
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
