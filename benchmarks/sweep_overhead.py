"""What Ray Tune + Optuna cost on top of the trials themselves.

Runs the same quickstart-like trials twice, in one run: back to back outside Ray, by the trial
function in a pool of worker processes at the sweep's concurrency; then as a `ganlab` sweep on a
private local Ray (grid search, no early stopping, so both sides run exactly the same trials).
Prints both wall times, their ratio (goal: <= 1.05 with ~20 s trials) and the per-trial overhead.

    python benchmarks/sweep_overhead.py                    # 6 trials of ~20 s, 2 at a time
    python benchmarks/sweep_overhead.py --steps 400 --trials 4
"""

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import yaml

SWEEP = {
    "name": "overhead",
    "base": {
        "dataset": "ring8",
        "arch": "mlp",
        "width": 128,
        "depth": 3,
        "z_dim": 16,
        "batch_size": 128,
        "eval_every": 250,
        "n_eval": 2500,
    },
    "seeds": 3,
    "search_alg": "grid",
    "scheduler": "none",
    "objective": {"metric": "fid", "mode": "min"},
    "resources": {"cpu": 1},
}


def _run_trial(values: dict) -> float:
    import torch

    from ganlab.config import TrialConfig
    from ganlab.trial import Trial

    torch.set_num_threads(1)  # what Ray gives a 1-CPU trial (OMP_NUM_THREADS=1)
    start = time.perf_counter()
    Trial(TrialConfig.from_dict(values)).run()
    return time.perf_counter() - start


def reference(configs: list[dict], concurrency: int) -> tuple[float, list[float]]:
    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with context.Pool(concurrency, maxtasksperchild=None) as pool:
        durations = pool.map(_run_trial, configs, chunksize=1)
    return time.perf_counter() - start, durations


def ganlab_sweep(sweep_file: Path, storage: Path) -> tuple[float, float]:
    from ganlab import raystart, spec, sweep

    s = spec.load(sweep_file, storage=str(storage))
    start = time.perf_counter()
    raystart.start(None)
    ready = time.perf_counter()
    sweep.run(s, echo=lambda line: None)
    end = time.perf_counter()
    import ray

    ray.shutdown()
    return end - start, end - ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1500, help="~20 s trials here by default")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    lrs = [round(1e-4 * 1.5**i, 8) for i in range(args.trials)]
    base = {**SWEEP["base"], "steps": args.steps}
    configs = [{**base, "lr_g": lr, "seeds": [0, 1, 2], "device": "cpu"} for lr in lrs]
    with tempfile.TemporaryDirectory() as tmp:
        sweep_file = Path(tmp) / "overhead.yaml"
        body = {**SWEEP, "base": base, "search": {"lr_g": {"choice": lrs}},
                "max_concurrent": args.concurrency}  # fmt: skip
        sweep_file.write_text(yaml.safe_dump(body))
        os.environ.setdefault("GANLAB_CACHE", str(Path(tmp) / "cache"))

        ref_wall, durations = reference(configs, args.concurrency)
        ray_wall, fit_wall = ganlab_sweep(sweep_file, Path(tmp) / "runs")

    per_trial = (ray_wall - ref_wall) * args.concurrency / args.trials
    print(f"{args.trials} trials of {args.steps} steps x 3 seeds, {args.concurrency} at a time")
    print(f"  mean trial time outside Ray      {sum(durations) / len(durations):8.2f} s")
    print(f"  reference (process pool) wall    {ref_wall:8.2f} s")
    print(f"  ganlab sweep wall (with Ray start) {ray_wall:6.2f} s   (fit only {fit_wall:.2f} s)")
    print(f"  ratio sweep / reference          {ray_wall / ref_wall:8.3f}   (goal <= 1.05)")
    print(f"  ratio fit only / reference       {fit_wall / ref_wall:8.3f}")
    print(f"  overhead per trial               {per_trial:8.2f} s")


if __name__ == "__main__":
    main()
