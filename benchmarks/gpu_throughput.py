"""ganlab on a card: batched and sequential training, CUDA graphs, how busy the card is, trials
per card.

Needs a CUDA device; anywhere else it exits 2 with one line. In one run (under ten minutes on
one card, `--data-dir` holding MNIST or not) it measures:

1. seed-steps/s of the bare PyTorch loop (the DCGAN example's, on the same models, data on the
   card; see trial_throughput.py) and of ganlab `Trial`s of K = 1, 3, 8 seeds in the
   sequential execution, the batched one, and the batched one with `cuda_graphs`, repetitions
   interleaved, for ring8/mlp, digits/dcgan and mnist/dcgan (the last where `--data-dir` holds
   MNIST in torchvision's layout); with each, the share of the time the card is busy (the union
   of the CUDA kernels' intervals over wall time, from torch.profiler's kernel events alone:
   memory copies and sets do not count; a lower bound, since profiling slows the host a little)
   and the GFLOP/s achieved (the FLOPs of one seed's step, counted with torch's FlopCounterMode
   on the sequential execution, times the median seed-steps/s: the same work for every
   contender, where FlopCounterMode would count a grouped convolution's backward K times);
2. trials per card: 1, 2 and 4 processes each training a batched digits/dcgan trial (K=3) on
   the card at once, for the same seconds, with and without MPS (a private MPS daemon, where
   `nvidia-cuda-mps-control` is installed): seed-steps/s summed over the card. `--sweeps` adds
   the older measure, the same small sweep run with `resources: {gpu: 1, 0.5, 0.25}`.

Before them, the device check (alone with `--device-check`: a few minutes, well under ten) prints
one PASS or FAIL line per check, with its numbers, and the script exits 1 if any failed:

1. the fused Adam skip: a seed flagged dead on the card (found_inf = 1) keeps its weights, Adam
   moments and step counts, and its EMA, while the other seed trains; and the same for the
   batched execution's per-seed skip;
2. random state sizes: a CUDA generator's and a CPU generator's, as ganlab tells them apart;
3. a card's checkpoint resumed on the CPU and a CPU's on the card (`Trial.save`, `Trial.load`):
   weights as saved, streams reseeded as `devices.reseed_value` says, the move recorded;
4. repeatability: digits/dcgan (K=3) trained twice from one checkpoint with `deterministic` on
   and off, weights compared bitwise (on must be equal), and what determinism costs in
   seed-steps/s, with the ops that warned they have no deterministic implementation;
5. placement under Ray: on a local node with one GPU, what a zero-GPU and a one-GPU task see
   (CUDA_VISIBLE_DEVICES, torch.cuda.device_count()) and the device `trial_device` gives them;
6. `fp32_precision: tf32` trains on the card (set through PyTorch's new API alone, no "mix of
   the legacy and new APIs" error) and evaluates, with its seed-steps/s against `ieee`;
7. the batched execution against the sequential one on the card (weights and signals after a
   few steps, as tests/test_batched.py compares them on the CPU), and `cuda_graphs` replays
   against eager batched steps: the same random streams (generator states equal), weights.

    python benchmarks/gpu_throughput.py --data-dir ~/data        # under ten minutes on one card
    python benchmarks/gpu_throughput.py --device-check           # only the device check
    python benchmarks/gpu_throughput.py --steps 200 --ks 1 8 --no-mps
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils._pytree import tree_leaves

from ganlab.config import TrialConfig
from ganlab.devices import (
    CPU_STATE_BYTES,
    CUDA_STATE_BYTES,
    DeviceError,
    generator_state,
    reseed_value,
    seeded_generator,
    state_device_type,
    trial_device,
)
from ganlab.trial import STREAMS, Trial, read_state, written_on

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
    """Share of the wall time of `train(steps)` during which a CUDA kernel ran: the union of the
    kernels' intervals (streams may overlap), from the profiler's kernel events alone."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        train(steps)
        torch.cuda.synchronize()
        wall_ns = (time.perf_counter() - start) * 1e9
    kernels = [
        (e.start_ns(), e.end_ns())
        for e in prof.profiler.kineto_results.events()
        if e.device_type() == DeviceType.CUDA and "kernel" in e.activity_type().lower()
    ]
    return union_ns(kernels) / wall_ns


def union_ns(intervals: list[tuple[int, int]]) -> int:
    """Length of the union of `(start, end)` intervals."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


def flops_per_step(train: Callable[[int], None]) -> float:
    """FLOPs of one step of `train` (every seed's), as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train(1)
    return float(counter.get_total_flops())


def training(args: argparse.Namespace) -> None:
    # The same loop and the same interleaved timing as on the CPU; on a card every contender
    # returns from `train` only when the card is done.
    from trial_throughput import bare_loop, seed_steps_per_s

    print(f"seed-steps/s on {torch.cuda.get_device_name()} (median of {args.repeats}, "
          f"{args.steps} trial-steps each)")  # fmt: skip
    print(f"{'case':13} {'K':>3} {'contender':16} {'median':>9} {'min':>9} {'max':>9} "
          f"{'/ bare':>7} {'busy':>6} {'GFLOP/s':>8}")  # fmt: skip
    for case, values in CASES.items():
        one = TrialConfig.from_dict({**values, "seeds": [0], "device": "cuda",
                                     "data_dir": args.data_dir})  # fmt: skip
        try:
            contenders = {(1, "bare"): (bare_loop(one, "cuda"), 1)}
        except FileNotFoundError:
            print(f"{case:13} skipped: no {values['dataset']} under --data-dir {args.data_dir}")
            continue
        for k in args.ks:
            config = one.replace(seeds=list(range(k)))
            for name, fields in EXECUTIONS.items():
                contenders[k, name] = (Trial(config.replace(**fields)).train, k)
        rates = seed_steps_per_s(contenders, args.steps, args.repeats)
        bare = statistics.median(rates[1, "bare"])
        # One seed's step, counted on the sequential execution: FlopCounterMode counts a
        # grouped convolution's backward pass K times over, so the batched one's own count
        # would flatter it. Every contender does this work per seed-step.
        per_seed_step = flops_per_step(Trial(one.replace(execution="sequential")).train)
        for (k, name), (train, _) in contenders.items():
            median = statistics.median(rates[k, name])
            busy = busy_share(train, args.steps)
            gflops = per_seed_step * median / 1e9
            print(f"{case:13} {k:3d} {name:16} {median:9.0f} {min(rates[k, name]):9.0f} "
                  f"{max(rates[k, name]):9.0f} {median / bare:7.2f} {busy:6.1%} "
                  f"{gflops:8.1f}", flush=True)  # fmt: skip


EXECUTIONS = {
    "sequential": {"execution": "sequential"},
    "batched": {"execution": "batched"},
    "batched+graphs": {"execution": "batched", "cuda_graphs": True},
}
"""The contenders of the training table, as trial fields."""


# --- trials per card ----------------------------------------------------------------------

PER_CARD = (1, 2, 4)  # trials training on one card at once


def trials_per_card(args: argparse.Namespace) -> None:
    print(f"\ntrials per card: batched digits/dcgan K=3, {args.card_seconds:.0f} s each, "
          "seed-steps/s summed over the card")  # fmt: skip
    print(f"{'trials':>6} {'plain':>10} {'MPS':>10}")
    with _mps(args.no_mps) as mps:
        for n in PER_CARD:
            plain = _at_once(n, args, dict(os.environ))
            shared = f"{_at_once(n, args, mps):10.0f}" if isinstance(mps, dict) else f"{'':10}"
            print(f"{n:6d} {plain:10.0f} {shared}", flush=True)
        if not isinstance(mps, dict):
            print(f"MPS: {mps}")


def _at_once(n: int, args: argparse.Namespace, env: dict[str, str]) -> float:
    """Seed-steps/s of `n` worker processes training at once for `card_seconds`: each builds
    and warms its trial, says so, and starts when all have."""
    command = [sys.executable, __file__, "--worker", str(args.card_seconds)]
    workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(n)]  # fmt: skip
    try:
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a worker failed before training: {worker.wait()}")
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        done = [json.loads(worker.stdout.readline()) for worker in workers]
    finally:
        for worker in workers:
            worker.wait()
    return sum(d["seed_steps"] for d in done) / max(d["seconds"] for d in done)


def worker(seconds: float) -> None:
    """One trial of `trials_per_card`: ready, then trains until `seconds` have passed."""
    config = TrialConfig.from_dict({**CASES["digits/dcgan"], "device": "cuda",
                                    "execution": "batched"})  # fmt: skip
    trial = Trial(config)
    trial.train(20)  # warm: cuDNN and the allocator set up before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        trial.train(10)
        steps += 10
    elapsed = time.perf_counter() - start
    print(json.dumps({"seed_steps": steps * len(trial.seeds), "seconds": elapsed}), flush=True)


@contextmanager
def _mps(skip: bool) -> Iterator[dict[str, str] | str]:
    """The environment of clients of a private MPS daemon (its own pipe and log directories, so
    no other process on the machine is served by it), or why there is none."""
    control = shutil.which("nvidia-cuda-mps-control")
    if skip or control is None:
        yield "skipped (--no-mps)" if skip else "nvidia-cuda-mps-control not found"
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": f"{tmp}/pipe",
               "CUDA_MPS_LOG_DIRECTORY": f"{tmp}/log"}  # fmt: skip
        os.makedirs(env["CUDA_MPS_PIPE_DIRECTORY"])
        os.makedirs(env["CUDA_MPS_LOG_DIRECTORY"])
        started = subprocess.run([control, "-d"], env=env, capture_output=True, text=True)
        if started.returncode:
            yield f"the daemon did not start: {started.stderr.strip() or started.returncode}"
            return
        try:
            yield env
        finally:
            subprocess.run([control], input="quit\n", text=True, env=env, capture_output=True)


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


# --- the device check ----------------------------------------------------------------------

Check = tuple[bool, str]  # passed, and the line that says what was seen


def small(case: str, device: str = "cuda", **values: Any) -> TrialConfig:
    """A small trial of `case`, quick to train and to evaluate."""
    sizes = {"width": 16, "batch_size": 32, "n_eval": 200, "steps": 40, "eval_every": 10}
    return TrialConfig.from_dict({**CASES[case], **sizes, "device": device, **values})


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(obj) if isinstance(leaf, torch.Tensor)]


def _same(a: Any, b: Any) -> bool:
    """Whether two nests of tensors are bitwise equal, wherever each lives."""
    pairs = list(zip(_tensors(a), _tensors(b), strict=True))
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in pairs)


def _seed_tensors(trial: Trial, i: int) -> dict[str, Any]:
    """Weights, Adam state (moments and step counts) and EMA of seed `i`, copied."""
    state = trial.state_dict()["seeds"][i]
    parts = {part: state[part] for part in ("g", "d", "opt_g", "opt_d", "g_ema")}
    return {part: [t.clone() for t in _tensors(value)] for part, value in parts.items()}


def fused_adam_skip(args: argparse.Namespace) -> Check:
    trial = Trial(small("ring8/mlp", seeds=[0, 1], ema=0.9))
    trial.train(5)
    dead, steps = trial.seeds[1], 10
    before, live_before = _seed_tensors(trial, 1), _seed_tensors(trial, 0)
    dead.dead.fill_(1.0)  # found_inf = 1, as the step's own check sets it
    trial.train(steps)
    after, live_after = _seed_tensors(trial, 1), _seed_tensors(trial, 0)
    kept = {part: _same(before[part], after[part]) for part in before}
    adam_steps = [float(dead.opt_d.state[p]["step"]) for p in dead.d_params[:1]]
    live_moved = not _same(live_before["g"], live_after["g"])
    passed = all(kept.values()) and live_moved and adam_steps == [5.0]
    line = (f"fused Adam skip: dead seed unchanged over {steps} steps {kept}, D's Adam step "
            f"count {adam_steps} (5 before); live seed trained: {live_moved}")  # fmt: skip
    return passed, line


def generator_sizes(args: argparse.Namespace) -> Check:
    cuda = generator_state(torch.Generator("cuda"))
    cpu = generator_state(torch.Generator("cpu"))
    told = state_device_type(cuda), state_device_type(cpu)
    sizes = len(cuda), len(cpu)
    passed = sizes == (CUDA_STATE_BYTES, CPU_STATE_BYTES) and told == ("cuda", "cpu")
    line = (f"generator states: cuda {sizes[0]} bytes, cpu {sizes[1]} bytes (ganlab expects "
            f"{CUDA_STATE_BYTES}, {CPU_STATE_BYTES}; told apart as {told})")  # fmt: skip
    return passed, line


def resume_check(path: Path, target: Trial, steps: int = 10) -> Check:
    """Load the checkpoint at `path` into `target` (a trial of its configuration on any device)
    and train it `steps` on: weights as saved, each stream restored where the device type is
    the one that wrote it and reseeded (`reseed_value`) where not, the move recorded in its
    `reseeds` and its next report."""
    saved = read_state(path)
    step, seeds = saved["step"], saved["seeds"]
    target.load(path)
    to = target.seeds[0].rng.device.type
    kinds = {written_on(seed, stream) for seed in seeds for stream in STREAMS}
    moves = [{"step": step, "from": kind, "to": to} for kind in sorted(kinds - {to})]
    want = [*saved.get("reseeds", []), *moves]
    streams = all(
        generator_state(getattr(s, stream)) == _expected_stream(saved_seed, stream, step, target)
        for s, saved_seed in zip(target.seeds, seeds, strict=True)
        for stream in STREAMS
    )
    weights = all(_same(s.g.state_dict(), saved_seed["g"]) and
                  _same(s.d.state_dict(), saved_seed["d"])
                  for s, saved_seed in zip(target.seeds, seeds, strict=True))  # fmt: skip
    target.run(until=step + steps)
    last = target.history[-1]
    passed = target.reseeds == want == last.reseeds and streams and weights
    passed = passed and last.step == step + steps
    return passed, (f"{'/'.join(sorted(kinds))} -> {to} ({last.device}) at step {step}: reseeds "
                    f"{last.reseeds} (expected {want}), streams as documented: {streams}, "
                    f"weights as saved: {weights}, trained on to step {last.step}")  # fmt: skip


def _expected_stream(saved: dict[str, Any], stream: str, step: int, target: Trial) -> bytes:
    """The state a loaded stream should have: the saved one on the device type that wrote it,
    else a generator of the target's seeded with `reseed_value`."""
    if written_on(saved, stream) == target.seeds[0].rng.device.type:
        return saved[stream]
    return generator_state(seeded_generator(reseed_value(saved["seed"], step, stream),
                                            target.device))  # fmt: skip


def cross_device_resume(args: argparse.Namespace) -> Check:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for source, target in (("cuda", "cpu"), ("cpu", "cuda")):
            path = Path(tmp) / f"{source}.pt"
            trial = Trial(small("ring8/mlp", source))
            trial.run(until=20)
            trial.save(path)
            results.append(resume_check(path, Trial(small("ring8/mlp", target))))
    return all(passed for passed, _ in results), "; ".join(line for _, line in results)


def repeatability(args: argparse.Namespace) -> Check:
    steps = args.check_steps
    equal_on, rate_on, warned = _twice(True, steps)
    equal_off, rate_off, _ = _twice(False, steps)
    warned_ops = sorted(warned) or "none"
    line = (f"repeatability, digits/dcgan K=3, {steps} steps twice from one checkpoint: "
            f"deterministic on: bitwise equal {equal_on}, {rate_on:.0f} seed-steps/s; off: "
            f"bitwise equal {equal_off}, {rate_off:.0f} seed-steps/s; determinism costs "
            f"{1 - rate_on / rate_off:.1%}; ops that warned: {warned_ops}")  # fmt: skip
    return equal_on, line  # off may or may not repeat: that is what it reports


def _twice(deterministic: bool, steps: int) -> tuple[bool, float, set[str]]:
    """Train from one checkpoint twice: bitwise equal, the faster seed-steps/s, and the ops that
    warned they have no deterministic implementation."""
    config = TrialConfig.from_dict({**CASES["digits/dcgan"], "device": "cuda",
                                    "deterministic": deterministic})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "start.pt"
        start = Trial(config)
        start.train(20)  # past cuDNN's first calls: both runs start warm
        start.save(path)
        states, rates, warned = [], [], set()
        for _ in range(2):
            trial = Trial(config)
            trial.load(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                began = time.perf_counter()
                trial.train(steps)  # waits for the card
                rates.append(steps * len(trial.seeds) / (time.perf_counter() - began))
            # "<op> does not have a deterministic implementation, but you set ...": the op
            warned |= {str(w.message).split(" does not have")[0][:80] for w in caught
                       if "deterministic" in str(w.message)}  # fmt: skip
            states.append(trial.state_dict()["seeds"])
    return _same(states[0], states[1]), max(rates), warned


def ray_placement(args: argparse.Namespace) -> Check:
    import ray

    # "local": a node of its own, also inside a Ray job (where RAY_ADDRESS names the cluster)
    ray.init(address="local", num_gpus=1, num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        def place() -> dict[str, Any]:
            ids = ray.get_gpu_ids()
            try:
                device = str(trial_device("auto", ids))
            except DeviceError as error:
                device = f"DeviceError: {error}"
            return {"gpu_ids": ids, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "device_count": torch.cuda.device_count(), "device": device}  # fmt: skip

        zero, one = ray.get([place.options(num_gpus=g).remote() for g in (0, 1)])
    finally:
        ray.shutdown()
    passed = zero["device"] == "cpu" and one["device"] == "cuda" and one["device_count"] == 1
    return passed, f"Ray placement: zero-GPU task {zero}; one-GPU task {one}"


def tf32_training(args: argparse.Namespace) -> Check:
    rates, alive = {}, {}
    for precision in ("ieee", "tf32"):
        values = {**CASES["digits/dcgan"], "device": "cuda", "fp32_precision": precision}
        trial = Trial(TrialConfig.from_dict(values))
        trial.train(20)  # warm
        began = time.perf_counter()
        trial.train(args.check_steps)
        rates[precision] = args.check_steps * 3 / (time.perf_counter() - began)
        report = trial.evaluate()
        alive[precision] = not any(s.diverged for s in report.seeds.values())
    line = (f"fp32_precision: ieee {rates['ieee']:.0f}, tf32 {rates['tf32']:.0f} seed-steps/s "
            f"(digits/dcgan K=3, {args.check_steps} steps); seeds alive: {alive}")  # fmt: skip
    return all(alive.values()), line


def batched_skip(args: argparse.Namespace) -> Check:
    trial = Trial(small("ring8/mlp", seeds=[0, 1], ema=0.9, execution="batched"))
    trial.train(5)
    before, live_before = _seed_tensors(trial, 1), _seed_tensors(trial, 0)
    trial.seeds[1].dead.fill_(1.0)  # flagged on the card, as the step's own check flags it
    trial.train(10)
    after, live_after = _seed_tensors(trial, 1), _seed_tensors(trial, 0)
    kept = {part: _same(before[part], after[part]) for part in before}
    adam_steps = [float(s["step"]) for s in trial.seeds[1].opt_d.state.values()][:1]
    live_moved = not _same(live_before["g"], live_after["g"])
    passed = all(kept.values()) and live_moved and adam_steps == [5.0]
    return passed, (f"batched skip: dead seed unchanged over 10 steps {kept}, D's Adam step "
                    f"count {adam_steps} (5 before); live seed trained: {live_moved}")  # fmt: skip


def batched_matches_sequential(args: argparse.Namespace) -> Check:
    """Both executions of one configuration, 3 steps on the card: the same streams, weights
    and signals within 1e-3 of their largest value (and a few lr: see tests/test_batched.py)."""
    values = {"norm_g": "batch", "spectral_norm": True, "ema": 0.9, "penalty": "gp",
              "lr_g": 1e-5, "lr_d": 1e-5, "seeds": [0, 1, 2]}  # fmt: skip
    worst, streams = {}, True
    for case in ("ring8/mlp", "digits/dcgan"):
        trials = [
            Trial(small(case, execution=mode, **values)) for mode in ("sequential", "batched")
        ]
        for trial in trials:
            trial.train(3)
        ours, theirs = (t.state_dict()["seeds"] for t in trials)
        for a, b in zip(ours, theirs, strict=True):
            streams &= a["rng"] == b["rng"]
            for part in ("g", "d", "signals"):
                x, y = (torch.cat([t.double().flatten().cpu() for t in _tensors(p[part])])
                        for p in (a, b))  # fmt: skip
                scale = float(y.abs().max())
                worst[case, part] = max(worst.get((case, part), 0.0),
                                        float((x - y).abs().max()) / scale)  # fmt: skip
    passed = streams and all(v <= 1e-3 + 1e-4 for v in worst.values())
    shown = {f"{case} {part}": f"{v:.1e}" for (case, part), v in worst.items()}
    return passed, (f"batched = sequential on the card after 3 steps: streams equal {streams}, "
                    f"largest difference / largest value {shown} (<= 1.1e-3)")  # fmt: skip


def graphs_replay(args: argparse.Namespace) -> Check:
    """`cuda_graphs` against eager batched steps of one configuration: after 3 eager steps, a
    capture and replays, the same random streams and (up to the card's nondeterministic
    kernels) the same weights; a second `train` call replays the graph it kept."""
    config = small("digits/dcgan", seeds=[0, 1, 2], execution="batched", ema=0.9, penalty="gp")
    eager, graphed = Trial(config), Trial(config.replace(cuda_graphs=True))
    lines, passed = [], True
    for steps in (20, 10):
        eager.train(steps)
        graphed.train(steps)
        streams = all(generator_state(a.rng) == generator_state(b.rng)
                      for a, b in zip(eager.seeds, graphed.seeds, strict=True))  # fmt: skip
        x, y = (torch.cat([t.double().flatten().cpu() for t in _tensors(t.state_dict()["seeds"])])
                for t in (eager, graphed))  # fmt: skip
        diff = float((x - y).abs().max()) / float(y.abs().max())
        captured = graphed._batched is not None and graphed._batched.graph is not None
        passed &= streams and captured and diff <= 1e-4
        lines.append(f"after {graphed.step} steps: streams equal {streams}, captured "
                     f"{captured}, largest difference / largest value {diff:.1e}")  # fmt: skip
    return passed, "cuda_graphs replays = eager batched steps: " + "; ".join(lines)


CHECKS = (fused_adam_skip, batched_skip, generator_sizes, cross_device_resume, repeatability,
          ray_placement, tf32_training, batched_matches_sequential, graphs_replay)  # fmt: skip


def device_check(args: argparse.Namespace) -> bool:
    """Run every check, one line each; True when all passed."""
    print(f"device check on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = []
    for check in CHECKS:
        try:
            passed, line = check(args)
        except Exception as error:  # a check that raises fails; the others still run
            passed, line = False, f"{check.__name__} raised {type(error).__name__}: {error}"
        print(f"{'PASS' if passed else 'FAIL'} {line}", flush=True)
        results.append(passed)
    return all(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="trial-steps per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 8], help="seeds K")
    parser.add_argument("--data-dir", default="data", help="MNIST in torchvision's layout")
    parser.add_argument("--card-seconds", type=float, default=15.0, help="per trials-per-card")
    parser.add_argument("--no-mps", action="store_true", help="trials per card without MPS only")
    parser.add_argument("--no-per-card", action="store_true", help="no trials-per-card runs")
    parser.add_argument("--sweeps", action="store_true", help="also the Ray sweeps per share")
    parser.add_argument("--sweep-trials", type=int, default=8)
    parser.add_argument("--sweep-steps", type=int, default=2000)
    parser.add_argument("--device-check", action="store_true", help="only the device check")
    parser.add_argument("--check-steps", type=int, default=300, help="steps of a repeat run")
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)  # a trials-per-card one
    args = parser.parse_args()
    no_card_exit()
    if args.worker is not None:
        worker(args.worker)
        return
    passed = device_check(args)
    if not args.device_check:
        print()
        training(args)
        if not args.no_per_card:
            trials_per_card(args)
        if args.sweeps:
            sweeps(args)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
