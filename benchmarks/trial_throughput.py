"""How fast ganlab trains, against a bare PyTorch loop written as the textbook examples write it.

The bare loop is the PyTorch DCGAN example's: the same G and D (`ganlab.models.build` from the
same configuration and seed), the same Adam settings, `BCEWithLogitsLoss`, one G forward per step
reused (detached) for D and for G, `zero_grad()`, no divergence checks, data drawn the same way
(`Data.sample` with a generator). ganlab is a `Trial` with one seed (and with three seeds),
`train(n)` timed after a warm-up. Repetitions are interleaved (bare, ganlab, ganlab K=3, bare,
...) and medians reported, so a change of load on the machine hits every contender alike.

It measures ring8/MLP and digits/DCGAN at the default configuration in one run, prints seed-steps
per second and the ratio ganlab / bare (goal ≥ 1.0), then the share of a trial's wall time spent
in evaluation at the default `eval_every` (goal ≤ 10 %).

    python benchmarks/trial_throughput.py                      # defaults, about two minutes
    python benchmarks/trial_throughput.py --steps 500 --repeats 7
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ganlab import data as datasets
from ganlab import models
from ganlab.config import TrialConfig
from ganlab.trial import Trial

CASES = {
    "ring8/mlp": {"dataset": "ring8", "arch": "mlp"},
    "digits/dcgan": {"dataset": "digits", "arch": "dcgan"},
}


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


def seed_steps_per_s(contenders: dict[str, tuple[Callable[[int], None], int]], steps: int,
                     repeats: int) -> dict[str, float]:  # fmt: skip
    """Median seed-steps/s of each `(train, n_seeds)`, repetitions interleaved, after warm-up."""
    for train, _ in contenders.values():
        train(max(1, steps // 5))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (train, n_seeds) in contenders.items():
            start = time.perf_counter()
            train(steps)
            rates[name].append(steps * n_seeds / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def evaluation_share(config: TrialConfig) -> tuple[float, float]:
    """(evaluation seconds, wall seconds) of a whole trial, step-0 evaluation included."""
    trial = Trial(config)
    trial.run()
    return trial.wall_s - trial.train_s, trial.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--eval-steps", type=int, default=3000, help="trial of the eval share")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: fastest here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load {os.getloadavg()[0]:.2f}, "
          f"{args.steps} steps x {args.repeats} repeats\n")  # fmt: skip

    header = f"{'case':14} {'bare':>9} {'ganlab':>9} {'ganlab K=3':>11} {'ratio':>6} {'K=3':>6}"
    print("seed-steps/s (median)\n" + header)
    for case, values in CASES.items():
        one = TrialConfig.from_dict({**values, "seeds": [0], "device": "cpu"})
        three = one.replace(seeds=[0, 1, 2])
        rates = seed_steps_per_s(
            {
                "bare": (bare_loop(one), 1),
                "ganlab": (Trial(one).train, 1),
                "ganlab3": (Trial(three).train, 3),
            },
            args.steps,
            args.repeats,
        )
        bare = rates["bare"]
        print(f"{case:14} {bare:9.0f} {rates['ganlab']:9.0f} {rates['ganlab3']:11.0f} "
              f"{rates['ganlab'] / bare:6.2f} {rates['ganlab3'] / bare:6.2f}")  # fmt: skip

    print(f"\nevaluation share of wall time, default eval_every, {args.eval_steps} steps, K=3")
    print(f"{'case':14} {'eval s':>8} {'wall s':>8} {'share':>7}")
    for case, values in CASES.items():
        config = TrialConfig.from_dict({**values, "steps": args.eval_steps, "device": "cpu"})
        eval_s, wall_s = evaluation_share(config)
        print(f"{case:14} {eval_s:8.1f} {wall_s:8.1f} {eval_s / wall_s:7.1%}")


if __name__ == "__main__":
    main()
