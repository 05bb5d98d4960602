"""ganlab on a card: training speed against a bare loop, how busy the card is, trials per card.

Needs a CUDA device; anywhere else it exits 2 with one line. In one run it measures:

1. seed-steps/s of the bare PyTorch loop (the DCGAN example's, on the same models, data on the
   card; see trial_throughput.py) and of a ganlab `Trial` with one and three seeds, on the same
   card, repetitions interleaved, and their ratio (goal >= 1.0), for ring8/mlp, digits/dcgan
   and mnist/dcgan (the last where `--data-dir` holds MNIST in torchvision's layout);
2. the share of the time the card is busy while ganlab trains (CUDA kernel time over wall time,
   from torch.profiler: a lower bound, since profiling slows the host a little);
3. the same small sweep run with 1, 2 and 4 trials per card (`resources: {gpu: 1, 0.5, 0.25}`):
   wall time, trials per hour and seed-steps/s summed over the card.

    python benchmarks/gpu_throughput.py                          # about ten minutes on one card
    python benchmarks/gpu_throughput.py --data-dir ~/data --steps 500 --sweep-trials 8
"""

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from ganlab.config import TrialConfig
from ganlab.trial import Trial

CASES = {
    "ring8/mlp": {"dataset": "ring8", "arch": "mlp"},
    "digits/dcgan": {"dataset": "digits", "arch": "dcgan", "norm_g": "batch"},
    "mnist/dcgan": {"dataset": "mnist", "arch": "dcgan", "norm_g": "batch"},
}
SHARES = (1.0, 0.5, 0.25)  # of a card per trial: 1, 2 and 4 trials at once


def no_card_exit() -> None:
    if not torch.cuda.is_available():
        print("gpu_throughput: torch sees no CUDA device here; run it on a machine with a card "
              "(README: Measure a GPU).", file=sys.stderr)  # fmt: skip
        sys.exit(2)


def busy_share(train: Callable[[int], None], steps: int) -> float:
    """Share of the wall time of `train(steps)` during which CUDA kernels ran."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        train(steps)
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    kernel_us = sum(event.self_device_time_total for event in prof.key_averages())
    return kernel_us / wall_us


def training(args: argparse.Namespace) -> None:
    # The same loop and the same interleaved timing as on the CPU; on a card both contenders
    # return from `train` only when the card is done.
    from trial_throughput import bare_loop, seed_steps_per_s

    print(f"seed-steps/s on {torch.cuda.get_device_name()} (median of {args.repeats}, "
          f"{args.steps} steps each)")  # fmt: skip
    print(f"{'case':14} {'bare':>9} {'ganlab':>9} {'K=3':>9} {'ratio':>6} {'K=3':>6} {'busy':>6}")
    for case, values in CASES.items():
        one = TrialConfig.from_dict({**values, "seeds": [0], "device": "cuda",
                                     "data_dir": args.data_dir})  # fmt: skip
        try:
            bare = bare_loop(one, "cuda")
        except FileNotFoundError:
            print(f"{case:14} skipped: no {values['dataset']} under --data-dir {args.data_dir}")
            continue
        ganlab_one, ganlab_three = Trial(one), Trial(one.replace(seeds=[0, 1, 2]))
        rates = seed_steps_per_s(
            {"bare": (bare, 1), "one": (ganlab_one.train, 1), "three": (ganlab_three.train, 3)},
            args.steps,
            args.repeats,
        )
        busy = busy_share(ganlab_three.train, args.steps)
        base = rates["bare"]
        print(f"{case:14} {base:9.0f} {rates['one']:9.0f} {rates['three']:9.0f} "
              f"{rates['one'] / base:6.2f} {rates['three'] / base:6.2f} {busy:6.1%}")  # fmt: skip


def sweep_file(directory: Path, share: float, args: argparse.Namespace) -> Path:
    at_once = round(1 / share)
    lrs = [round(1e-4 * 1.3**i, 8) for i in range(args.sweep_trials)]
    body = {
        "name": f"gpu-share-{at_once}",
        "base": {
            "dataset": "digits",
            "arch": "dcgan",
            "norm_g": "batch",
            "device": "cuda",
            "steps": args.sweep_steps,
            "eval_every": args.sweep_steps // 2,
        },
        "search": {"lr_g": {"choice": lrs}},
        "seeds": 3,
        "search_alg": "grid",
        "scheduler": "none",
        "max_concurrent": at_once,
        "resources": {"cpu": 1, "gpu": share},
        "objective": {"metric": "fid", "mode": "min"},
        "storage": str(directory / "runs"),
    }
    path = directory / f"share-{at_once}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def sweeps(args: argparse.Namespace) -> None:
    import ganlab.results

    print(f"\nsweeps of {args.sweep_trials} digits/dcgan trials x 3 seeds x {args.sweep_steps} "
          "steps on one card")  # fmt: skip
    print(f"{'trials/card':>11} {'wall s':>8} {'trials/h':>9} {'seed-steps/s':>13}")
    for share in SHARES:
        with tempfile.TemporaryDirectory() as tmp:
            path = sweep_file(Path(tmp), share, args)
            start = time.perf_counter()
            code = "from ganlab.cli import main; raise SystemExit(main())"
            subprocess.run([sys.executable, "-c", code, "sweep", str(path)], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            wall = time.perf_counter() - start
            trials, _ = ganlab.results.load(Path(tmp) / "runs" / f"gpu-share-{round(1 / share)}")
            seed_steps = trials["steps_done"].sum()
        print(f"{round(1 / share):11d} {wall:8.1f} {args.sweep_trials / wall * 3600:9.0f} "
              f"{seed_steps / wall:13.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--data-dir", default="data", help="MNIST in torchvision's layout")
    parser.add_argument("--sweep-trials", type=int, default=8)
    parser.add_argument("--sweep-steps", type=int, default=2000)
    parser.add_argument("--no-sweeps", action="store_true", help="only the training speed")
    args = parser.parse_args()
    no_card_exit()
    training(args)
    if not args.no_sweeps:
        sweeps(args)


if __name__ == "__main__":
    main()
