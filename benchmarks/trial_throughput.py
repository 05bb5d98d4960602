"""How fast ganlab trains: batched and sequential executions, against a bare PyTorch loop.

The bare loop is the PyTorch DCGAN example's: the same G and D (`ganlab.models.build` from the
same configuration and seed), the same Adam settings, `BCEWithLogitsLoss`, one G forward per step
reused (detached) for D and for G, `zero_grad()`, no divergence checks, data drawn the same way
(`Data.sample` with a generator). ganlab is a `Trial` of K seeds in each execution (`batched`:
one stacked model; `sequential`: seed after seed), `train(n)` timed after a warm-up.

For ring8/MLP and digits/DCGAN at the default configuration and K = 1, 3, 8, 32 it prints:

1. seed-steps/s of the bare loop and of both executions, repetitions interleaved (bare,
   sequential, batched, bare, ...) so that a change of load hits every contender alike, with
   min / median / max, and aten ops (counted with a TorchDispatchMode) per trial-step of all K
   seeds and per `train` call (the batched execution's copies in and out of the stacked
   model, once per evaluation interval);
2. ratios of medians: batched / sequential, the execution `ganlab.execution.RULE` chooses and
   its ratio to sequential, and at K = 1 the rule's choice against the bare loop;
3. the checks of the batched issue: ops at K = 8 within 1.5x of K = 1 (batched); with the
   rule's choice, ring8/MLP >= 1.1x sequential at K = 8 and no case below sequential at K = 3
   or 8; the single-seed ratio to the bare loop >= 1.0;
4. the share of a trial's wall time spent in evaluation at the default `eval_every`.

    python benchmarks/trial_throughput.py                      # about ten minutes on 2 cores
    python benchmarks/trial_throughput.py --ks 1 8 --repeats 3 --no-eval-share
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ganlab import data as datasets
from ganlab import execution, models
from ganlab.config import TrialConfig
from ganlab.trial import Trial

CASES = {
    "ring8/mlp": ({"dataset": "ring8", "arch": "mlp"}, 300),
    "digits/dcgan": ({"dataset": "digits", "arch": "dcgan"}, 120),
}
"""case -> (trial fields, seed-steps per timed repetition of one contender)."""
EXECUTIONS = ("sequential", "batched")


def bare_loop(config: TrialConfig, device: str = "cpu") -> Callable[[int], None]:
    """`train(n)` of the PyTorch DCGAN example's loop on ganlab's models and data, on `device`
    (data resident there, noise drawn there; on a card `train` waits for its work to finish)."""
    data = datasets.load(config.dataset, config.data_dir).to(torch.device(device))
    torch.manual_seed(config.seeds[0])
    g, d = models.build(config.arch_config, data.shape)
    g, d = g.to(device), d.to(device)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr_d, betas=betas)
    criterion = nn.BCEWithLogitsLoss()
    rng = torch.Generator(device).manual_seed(config.seeds[0])
    batch = config.batch_size

    def train(n_steps: int) -> None:
        for _ in range(n_steps):
            real = data.sample(batch, rng)
            fake = g(torch.randn(batch, config.z_dim, generator=rng, device=device))
            d.zero_grad()
            out_real, out_fake = d(real), d(fake.detach())
            loss_d = criterion(out_real, torch.ones_like(out_real)) + criterion(
                out_fake, torch.zeros_like(out_fake)
            )
            loss_d.backward()
            opt_d.step()
            g.zero_grad()
            out = d(fake)
            loss_g = criterion(out, torch.ones_like(out))
            loss_g.backward()
            opt_g.step()
        if device != "cpu":
            torch.cuda.synchronize(device)

    return train


Contenders = dict[str, tuple[Callable[[int], None], int]]  # name -> (train, seeds per step)


def seed_steps_per_s(contenders: Contenders, steps: int, repeats: int) -> dict[str, list[float]]:
    """Seed-steps/s of each `(train, n_seeds)` per repetition, repetitions interleaved, after a
    warm-up."""
    for train, _ in contenders.values():
        train(max(1, steps // 5))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (train, n_seeds) in contenders.items():
            start = time.perf_counter()
            train(steps)
            rates[name].append(steps * n_seeds / (time.perf_counter() - start))
    return rates


def ops_of(trial: Trial, steps: int) -> int:
    with execution.OpCount() as count:
        trial.train(steps)
    return count.n


def ops_per_step(trial: Trial) -> tuple[float, float]:
    """(ops per trial-step, ops per `train` call): the marginal count of a step, and what one
    call adds once (the batched execution's copies in and out of the stacked model, paid once
    per evaluation interval in a trial)."""
    short, long = ops_of(trial, 2), ops_of(trial, 6)
    per_step = (long - short) / 4
    return per_step, short - 2 * per_step


def evaluation_share(config: TrialConfig) -> tuple[float, float]:
    """(evaluation seconds, wall seconds) of a whole trial, step-0 evaluation included."""
    trial = Trial(config)
    trial.run()
    return trial.wall_s - trial.train_s, trial.wall_s


def measure(case: str, k: int, args: argparse.Namespace) -> dict:
    """Rates, ops and the rule's choice of one case at K seeds."""
    values, seed_steps = CASES[case]
    config = TrialConfig.from_dict({**values, "seeds": list(range(k)), "device": "cpu"})
    trials = {mode: Trial(config.replace(execution=mode)) for mode in EXECUTIONS}
    contenders: Contenders = {"bare": (bare_loop(config.replace(seeds=[0])), 1)}
    contenders.update({mode: (trial.train, k) for mode, trial in trials.items()})
    steps = max(2, round(seed_steps * args.scale / k))
    rates = seed_steps_per_s(contenders, steps, args.repeats)
    ops = {mode: ops_per_step(trial) for mode, trial in trials.items()}
    return {"rates": rates, "ops": ops, "rule": execution.choose(config, torch.device("cpu"))}


def print_rates(case: str, k: int, found: dict) -> None:
    for name, rates in found["rates"].items():
        per_step, per_call = found["ops"].get(name, (None, None))
        ops = f"{per_step:8.0f} {per_call:8.0f}" if per_step is not None else ""
        print(f"{case:13} {k:3d} {name:10} {min(rates):8.0f} {statistics.median(rates):8.0f} "
              f"{max(rates):8.0f} {ops}", flush=True)  # fmt: skip


def print_ratios(results: dict[tuple[str, int], dict]) -> list[tuple[str, bool]]:
    """The ratio table; returns the issue's checks, (what, passed)."""
    print(f"\n{'case':13} {'K':>3} {'batched/seq':>11} {'rule':>10} {'rule/seq':>8} "
          f"{'rule/bare':>9} {'ops K/K=1':>9}")  # fmt: skip
    checks = []
    for (case, k), found in results.items():
        median = {name: statistics.median(r) for name, r in found["rates"].items()}
        rule, ratio = found["rule"], median[found["rule"]] / median["sequential"]
        ops_one = results.get((case, 1), {}).get("ops", {}).get("batched")
        ops_ratio = found["ops"]["batched"][0] / ops_one[0] if ops_one else float("nan")
        bare = f"{median[rule] / median['bare']:9.2f}" if k == 1 else f"{'':9}"
        print(f"{case:13} {k:3d} {median['batched'] / median['sequential']:11.2f} {rule:>10} "
              f"{ratio:8.2f} {bare} {ops_ratio:9.2f}")  # fmt: skip
        if k == 8:
            checks.append((f"{case} K=8: batched ops {ops_ratio:.2f}x K=1's (<= 1.5)",
                           ops_ratio <= 1.5))  # fmt: skip
        if k in (3, 8):
            checks.append((f"{case} K={k}: rule ({rule}) {ratio:.2f}x sequential (>= 1.0)",
                           ratio >= 1.0))  # fmt: skip
        if (case, k) == ("ring8/mlp", 8):
            checks.append((f"ring8/mlp K=8: rule {ratio:.2f}x sequential (>= 1.1)", ratio >= 1.1))
        if k == 1:
            single = median[rule] / median["bare"]
            checks.append((f"{case} K=1: rule ({rule}) {single:.2f}x bare (>= 1.0)", single >= 1))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 8, 32], help="seeds K")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--scale", type=float, default=1.0, help="times the steps per repeat")
    parser.add_argument("--eval-steps", type=int, default=3000, help="trial of the eval share")
    parser.add_argument("--no-eval-share", action="store_true", help="skip the eval share")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: fastest here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load {os.getloadavg()[0]:.2f}, "
          f"{args.repeats} interleaved repeats\n")  # fmt: skip

    print(f"seed-steps/s and aten ops\n{'case':13} {'K':>3} {'contender':10} {'min':>8} "
          f"{'median':>8} {'max':>8} {'ops/step':>8} {'ops/call':>8}")  # fmt: skip
    results = {}
    for case in CASES:
        for k in args.ks:
            results[case, k] = measure(case, k, args)
            print_rates(case, k, results[case, k])
    checks = print_ratios(results)
    print()
    for line, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'} {line}")

    if args.no_eval_share:
        return
    print(f"\nevaluation share of wall time, default eval_every, {args.eval_steps} steps, K=3")
    print(f"{'case':14} {'eval s':>8} {'wall s':>8} {'share':>7}")
    for case, (values, _) in CASES.items():
        config = TrialConfig.from_dict({**values, "steps": args.eval_steps, "device": "cpu"})
        eval_s, wall_s = evaluation_share(config)
        print(f"{case:14} {eval_s:8.1f} {wall_s:8.1f} {eval_s / wall_s:7.1%}")


if __name__ == "__main__":
    main()
