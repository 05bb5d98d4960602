"""How collecting a sweep's results scales with its size: 2,000 trials × 3 seeds by default.

A child process writes the experiment directory of a finished sweep in Ray's on-disk format
(`tests/raytrials.py`: params.json, result.json with every report, checkpoints holding
samples.pt, hard-linked from one file of CIFAR-10-sized samples). This process then replays the
sweep's collections as Tune's callbacks drive them: before each collection `--batch` trials have
finished, and each of the `--concurrent` trials still running has a new report and a new
checkpoint. It prints the driver's peak memory (goal: at most 2 GB) and the time of a collection
against the trials already collected (goal: flat), then the time to load the tables.

    python benchmarks/collect_scale.py                            # 2,000 × 3, CIFAR-10 samples
    python benchmarks/collect_scale.py --trials 200 --dataset ring8
"""

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def synthesise(experiment: Path, trials: int, seeds: int, dataset: str, evals: int) -> None:
    """The experiment directory, written in a process of its own (its memory is not ours)."""
    import torch
    from raytrials import report, trial_config, write_trial

    from ganlab.data import DATASETS
    from ganlab.registry import lookup

    keep = 64  # TrialConfig.sample_keep
    experiment.mkdir(parents=True)
    template = experiment.parent / "samples-template.pt"
    generator = torch.Generator().manual_seed(0)
    shape = (keep, *lookup(DATASETS, dataset, "dataset").shape)
    torch.save({s: torch.randn(shape, generator=generator) for s in range(seeds)}, template)
    every = 100
    for i in range(trials):
        config = trial_config(dataset=dataset, data_dir="/nonexistent", arch="mlp",
                              seeds=list(range(seeds)), steps=every * (evals - 1),
                              eval_every=every, lr_d=1e-4 * (1 + i % 50))  # fmt: skip
        trial_id = f"{i:05d}"
        reports = [report(trial_id, config, k * every, k) for k in range(evals)]
        write_trial(experiment, trial_id, config, reports, template)


def configure(params: dict) -> dict:
    from raytrials import trial_config

    return trial_config(**params)


def replay(run_dir: Path, args: argparse.Namespace) -> list[tuple[int, float, int]]:
    """(trials collected before, seconds, trials in it) for each collection of the sweep."""
    from ganlab import rundir
    from ganlab.collect import Collector, TrialSource, local

    experiment = run_dir / rundir.EXPERIMENT
    collector = Collector(run_dir, "scale", configure)
    ids = [f"{i:05d}" for i in range(args.trials)]
    checkpoints = [f"checkpoint_{args.evals - 2:06d}", f"checkpoint_{args.evals - 1:06d}"]
    timings, finished = [], 0
    for round_ in range(0, args.trials, args.batch):
        done = ids[round_ : round_ + args.batch]
        running = ids[round_ + args.batch : round_ + args.batch + args.concurrent]
        for n, trial_id in enumerate(done + running):
            trial_dir = experiment / rundir.trial_dir_name(trial_id)
            status = "TERMINATED" if n < len(done) else "RUNNING"
            if status == "RUNNING":  # a new report (the last one again) and a new checkpoint
                result = trial_dir / rundir.RESULT_FILE
                with result.open("a") as f:
                    f.write(result.read_text().splitlines()[-1] + "\n")
            checkpoint = trial_dir / checkpoints[(round_ // args.batch + n) % 2]
            collector.update(TrialSource(trial_id, (local(trial_dir),), local(checkpoint),
                                         status))  # fmt: skip
        start = time.perf_counter()
        collector()
        timings.append((finished, time.perf_counter() - start, len(done) + len(running)))
        finished += len(done)
    return timings


def load_times(run_dir: Path) -> tuple[float, float, int, int]:
    from ganlab import results

    start = time.perf_counter()
    trials, metrics = results.load(run_dir)
    tables = time.perf_counter() - start
    start = time.perf_counter()
    samples = results.load_samples(run_dir)
    return tables, time.perf_counter() - start, len(trials) + len(metrics), len(samples)


def main() -> None:
    from ganlab import rundir  # the standard library only: no torch before the measurements

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evals", type=int, default=11, help="reports per trial")
    # Any name in ganlab.data.DATASETS, checked in the child: importing the registry here would
    # load torch before the measured collections do.
    parser.add_argument("--dataset", default="cifar10", help="whose sample shape to write")
    parser.add_argument("--batch", type=int, default=10, help="trials done between collections")
    parser.add_argument("--concurrent", type=int, default=8, help="trials running meanwhile")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="collect-scale-") as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(
            target=synthesise,
            args=(run_dir / rundir.EXPERIMENT, args.trials, args.seeds, args.dataset, args.evals),
        )
        child.start()
        child.join()
        assert child.exitcode == 0, "synthesising the experiment failed"
        print(f"synthesised {args.trials} trials × {args.seeds} seeds × {args.evals} reports "
              f"({args.dataset} samples) in {time.perf_counter() - start:.0f}s")  # fmt: skip

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        timings = replay(run_dir, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        load_tables, load_samples, rows, sample_rows = load_times(run_dir)
        files = len(list((run_dir / rundir.TRIALS).glob("*.parquet")))
        size = sum(p.stat().st_size for p in run_dir.glob("*.parquet/*.parquet")) / 1024**2

    print(f"\n{len(timings)} collections, each of {args.batch} finished + up to "
          f"{args.concurrent} running trials (new report and checkpoint each)")  # fmt: skip
    print(f"{'trials collected before':>24}  {'median s':>9}  {'max s':>7}  {'per trial ms':>12}")
    buckets = max(1, args.trials // 10)
    for low in range(0, args.trials, buckets):
        inside = [(s, n) for before, s, n in timings[1:] if low <= before < low + buckets]
        if inside:
            seconds = [s for s, _ in inside]
            per_trial = 1000 * sum(seconds) / sum(n for _, n in inside)
            print(f"{f'{low}-{low + buckets - 1}':>24}  {statistics.median(seconds):>9.3f}  "
                  f"{max(seconds):>7.3f}  {per_trial:>12.1f}")  # fmt: skip
    steady = timings[1:]  # the first collection also imports torch and torchvision
    tenth = max(1, len(steady) // 10)
    first, last = steady[:tenth], steady[-tenth:]
    growth = statistics.median(s for _, s, _ in last) / statistics.median(s for _, s, _ in first)
    print(f"\nfirst collection (imports torch and torchvision): {timings[0][1]:.2f}s")
    print(f"per-collection time, last tenth / first tenth: {growth:.2f} (goal: about 1, flat)")
    print(f"driver peak memory: {peak:.0f} MB (before collecting: {before:.0f} MB; goal ≤ 2048)")
    print(
        f"tables: {files} files in trials.parquet/ (parts and segments), {size:.0f} MB in all; "
        f"load() {load_tables:.2f}s for {rows} trial and metric rows; load_samples() of every "
        f"trial {load_samples:.2f}s for {sample_rows} rows (pass trial_ids to read fewer)"
    )
    print(json.dumps({"peak_mb": round(peak), "growth": round(growth, 3)}))


if __name__ == "__main__":
    main()
