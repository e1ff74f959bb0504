"""One GPU lease, many runs: train the chapter 4.3 / 5 models side by side on one accelerator, evaluate them with the
importance-weighted log-likelihood, and pack the results into a few files.

Every run is a plain CLI command (`python -m dgmlab train ... --time-limit S`, then `python -m dgmlab eval ...`), so
each number it brings back records its command, seed, device, machine and wall-clock time in its metrics.json. The
runs share the GPU as separate processes; each stops after the epoch that passes the time limit and is evaluated on
what it reached. The packer exports float16 weights without optimiser state (`dgmlab.pretrained.export_run`) and
writes at most eight tar files under OUT, largest-first within the transfer limits.

Usage:
    python scripts/gpu_session.py --out DIR [--train-s 300] [--total-s 570] [--only NAME ...] [--jobs N] [--smoke]

`--smoke` shrinks every run (a few hundred training points, two epochs, small importance samples) so that the whole
pipeline can be checked on a CPU in a few minutes before an accelerator is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The four variants of thesis Fig. 5.2 / 5.3 (the same table as scripts/lvae_runs.sh).
LVAE_VARIANTS = {
    "vae": "hvae --set batch_norm=False --set batch_norm_heads=False --set warmup_epochs=0",
    "vae-bn": "hvae --set warmup_epochs=0",
    "vae-bn-wu": "hvae",
    "lvae-bn-wu": "lvae",
}


def jobs() -> list[dict]:
    """name, training arguments, evaluation arguments, and the file the run travels back in (None: metrics only)."""
    out = []
    for depth in (5, 3, 1):
        for variant, opts in LVAE_VARIANTS.items():
            out.append({"name": f"{variant}-d{depth}", "dir": f"runs/ch5/{variant}-d{depth}",
                        "train": f"{opts} --data mnist --set depth={depth} --set eval_iw=1"
                                 + ("" if depth == 5 else " --epochs 500"),  # the GPU goes to depth 5 first
                        "eval": "--iw 5000", "pack": "ch5-d5" if depth == 5 else None})
    out += [
        {"name": "avae-mnist", "dir": "runs/ch4/avae-mnist",
         "train": "avae --data mnist --epochs 2000 --set batch_norm=True", "eval": "--iw 5000", "pack": "fame-avae"},
        {"name": "avae2-mnist", "dir": "runs/ch4/avae2-mnist",  # the two-layer AVAE of A(19)-(20), A-Tab 1
         "train": "avae --data mnist --epochs 2000 --set layers=2 --set batch_norm=True", "eval": "--iw 5000",
         "pack": None},
        {"name": "cagem-mnist100", "dir": "runs/ch4/cagem-mnist100", "train": "cagem --data mnist --labels 100",
         "eval": "--iw 5000 --n-test 2000", "pack": "cagem100"},
        {"name": "cagem2d-mnist100", "dir": "runs/ch4/cagem2d-mnist100",
         "train": "cagem --data mnist --labels 100 --set z2_dim=2", "eval": "--iw 1000 --n-test 2000",
         "pack": "cagem2d"},
        {"name": "fame-mnist", "dir": "runs/ch5/fame-mnist", "train": "fame --data mnist",
         "eval": "--iw 200 --n-test 1000 --chunk 100", "pack": "fame-avae"},
        {"name": "fame_noconcat-mnist", "dir": "runs/ch5/fame_noconcat-mnist", "train": "fame_noconcat --data mnist",
         "eval": "--iw 200 --n-test 1000 --chunk 100", "pack": "fame_noconcat"},
    ]
    return out


def smoke(job: dict) -> dict:
    """The same job on a few hundred points for two epochs, with small importance samples."""
    job = dict(job)
    job["train"] = (job["train"].replace("--epochs 2000", "").replace("--epochs 500", "")
                    + " --n-train 600 --n-test 200 --epochs 2")
    job["eval"] = "--iw 8 --n-test 100 --chunk 4"
    job["dir"] = job["dir"].replace("runs/", "runs/smoke/", 1)
    return job


PRECHECK = ("lvae-bn-wu-d5", "vae-d5", "avae-mnist", "cagem-mnist100", "fame-mnist", "fame_noconcat-mnist")


def run_job(job: dict, args, t0: float, log, slots: threading.Semaphore | None = None) -> None:
    """Train ``job`` with the time limit, then evaluate it, inside one of the ``slots`` (``--jobs``)."""
    if slots is None:
        slots = threading.Semaphore(1)
    with slots:
        left = args.total_s - args.pack_s - (time.time() - t0)
        if left < args.train_s + args.grace_s:
            log(f"{job['name']}: not started, {left:.0f} s left is less than its time limit and grace")
            return
        _train_and_evaluate(job, args, t0, log)


def _train_and_evaluate(job: dict, args, t0: float, log) -> None:
    py = [sys.executable, "-m", "dgmlab"]
    folder = ROOT / job["dir"]
    folder.parent.mkdir(parents=True, exist_ok=True)
    train = py + ["train", *shlex.split(job["train"]), "--seed", "0", "--device", args.device, "--out", job["dir"],
                  "--no-progress", "--time-limit", str(args.train_s)]
    train.append("--resume" if (folder / "model.pt").exists() else "--fresh")
    ev = py + ["eval", f"{job['dir']}/model.pt", "--device", args.device, *shlex.split(job["eval"])]
    with open(ROOT / f"{job['dir']}.log", "a") as f:
        for phase, cmd in (("train", train), ("eval", ev)):
            if phase == "eval" and not (folder / "model.pt").exists():
                log(f"{job['name']}: no checkpoint, no evaluation")
                return
            # the evaluation gets what is left of the session once training has ended
            deadline = (args.train_s + args.grace_s if phase == "train"
                        else args.total_s - args.pack_s - (time.time() - t0))
            f.write(f"$ {shlex.join(cmd)}\n")
            f.flush()
            start = time.time()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
            try:
                rc = proc.wait(timeout=max(deadline, 1))
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed at its deadline"
            log(f"{job['name']}: {phase} ended ({rc}) after {time.time() - start:.0f} s")
            if phase == "train" and rc not in (0, "killed at its deadline"):
                return


def pack(selected: list[dict], out: Path, log) -> None:
    """Float16 exports of the runs that travel back as weights, and every run's metrics.json and log."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    from dgmlab.pretrained import export_run

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dgmlab-export-"))  # outside OUT: only the tar files travel
    groups: dict[str, list[Path]] = {}
    with tarfile.open(out / "metrics.tar.gz", "w:gz") as tar:
        for job in selected:
            folder = ROOT / job["dir"]
            for path in (folder / "metrics.json", ROOT / f"{job['dir']}.log"):
                if path.exists():
                    tar.add(path, arcname=f"{job['name']}/{path.name}")
            if job["pack"] and (folder / "model.pt").exists():
                try:
                    groups.setdefault(job["pack"], []).append(export_run(folder, job["name"], into=staging).parent)
                except Exception as err:  # one broken run must not cost the others their transfer
                    log(f"{job['name']}: export failed: {err}")
    budget = int(63.5 * 2**20) - (out / "metrics.tar.gz").stat().st_size
    for group, folders in groups.items():
        size = sum(p.stat().st_size for d in folders for p in d.iterdir())
        if size > min(budget, 16 * 2**20 - 2**16):
            log(f"{group}: {size / 2**20:.1f} MiB does not fit the transfer; left behind")
            continue
        with tarfile.open(out / f"{group}.tar", "w") as tar:
            for d in folders:
                tar.add(d, arcname=d.name)
        budget -= (out / f"{group}.tar").stat().st_size
        log(f"{group}: packed {', '.join(d.name for d in folders)} ({size / 2**20:.1f} MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the packed results (the device's $OUT)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--train-s", type=float, default=300.0, help="training time limit of every run (s)")
    parser.add_argument("--grace-s", type=float, default=100.0, help="extra time before a run is killed (s)")
    parser.add_argument("--total-s", type=float, default=570.0, help="wall-clock budget of the whole session (s)")
    parser.add_argument("--pack-s", type=float, default=40.0, help="time kept for packing at the end (s)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these job names")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs on the device at a time (default: all). Small networks share a GPU badly: 17 at "
                             "once gave each depth-5 ladder run 12 s per epoch (reproduction notes, the GPU session)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, to check the pipeline on a CPU")
    parser.add_argument("--precheck", action=argparse.BooleanOptionalAction, default=True,
                        help="first train each model family for three batches and stop if one fails")
    args = parser.parse_args()
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be a positive integer, got {args.jobs}")
    t0 = time.time()
    selected = [j for j in jobs() if args.only is None or j["name"] in args.only]
    if args.smoke:
        selected = [smoke(j) for j in selected]
    lock = threading.Lock()

    def log(msg: str) -> None:
        with lock:
            print(f"[{time.time() - t0:6.1f} s] {msg}", flush=True)

    os.environ.update(OMP_NUM_THREADS="1", DGMLAB_PROGRESS="0", PYTHONUNBUFFERED="1")
    if args.precheck:
        # A few batches of one run per model family first: a failure costs seconds of the lease, not all of it.
        checks = [smoke(j) for j in jobs() if j["name"] in PRECHECK]
        for j in checks:
            j["train"] += " --max-batches 3"
            j["dir"] = j["dir"].replace("runs/smoke/", "runs/precheck/", 1)
        commands = [[sys.executable, "-m", "dgmlab", "train", *shlex.split(j["train"]), "--device", args.device,
                     "--out", j["dir"], "--no-progress", "--fresh"] for j in checks]
        procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for c in commands]
        failed = False
        for j, proc in zip(checks, procs):
            text, _ = proc.communicate()
            if proc.returncode != 0:
                failed = True
                log(f"precheck {j['name']} failed:\n{text[-3000:]}")
        log("precheck " + ("FAILED: nothing else is run" if failed else "passed"))
        if failed:
            return 3
    log(f"{len(selected)} runs on {args.device}: {', '.join(j['name'] for j in selected)}")
    slots = threading.Semaphore(args.jobs or len(selected))
    threads = [threading.Thread(target=run_job, args=(j, args, t0, log, slots), daemon=True) for j in selected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(args.total_s - args.pack_s - (time.time() - t0), 0))
    summary = {}
    for j in selected:
        path = ROOT / j["dir"] / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            final = m.get("final", {})
            summary[j["name"]] = {"epochs": m.get("epochs_done"), "train_s": m.get("train_time_s"),
                                  **{k: final[k] for k in ("test_elbo", "test_error", "test_active_units")
                                     if k in final},
                                  **({"eval": {k: v for k, v in m["eval"].items() if k.startswith("test_")
                                               and not isinstance(v, list)}} if "eval" in m else {})}
    print(json.dumps(summary, indent=1), flush=True)
    pack(selected, Path(args.out), log)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
