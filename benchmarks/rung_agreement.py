"""Does a rung evaluation of fewer fakes rank a sweep's configurations as the final one does?

`n_eval_rung` lets the evaluations before a trial's last use fewer fakes than `n_eval`: cheaper,
noisier, and what ASHA's rungs compare. This trains a small sweep's configurations (each loss at
a few learning rates of D, K=3 seeds), then measures each trained trial's robust objective
twice from the same generators: with the final sample count and with the rung count (the first
`n_rung` of the same draws). It prints both per configuration, the time one evaluation of all
seeds takes at each count, and Spearman's rank correlation of the two objectives over the
configurations (1: the rung ranks them exactly as the final evaluation does).

    python benchmarks/rung_agreement.py                       # ring8 and digits, ~10 minutes
    python benchmarks/rung_agreement.py --cases digits --steps 400
"""

import argparse
import itertools
import time

import torch
from scipy.stats import spearmanr

from ganlab.config import TrialConfig
from ganlab.losses import LOSSES
from ganlab.metrics import Evaluator
from ganlab.objective import mode_outcome, robust_objective
from ganlab.reports import SeedReport
from ganlab.trial import Trial

QUICKSTART = {"dataset": "ring8", "arch": "mlp", "width": 128, "depth": 2, "z_dim": 16,
              "batch_size": 256, "ema": 0.995, "metric": "good_modes", "mode": "max"}  # fmt: skip
CASES = {
    # the quickstart's base and objective: the final count its protocol's, the rung one fifth
    "ring8": (QUICKSTART, 500),
    "digits": ({"dataset": "digits", "arch": "dcgan", "metric": "fid", "mode": "min"}, 250),
}
LR_D = (1e-4, 4e-4, 1.6e-3)


def objectives(trial: Trial, n_rung: int) -> tuple[float, float, float, float]:
    """(final objective, rung objective, final seconds, rung seconds) of `trial` now."""
    config, live = trial.config, [s for s in trial.seeds if s.alive]
    trial._read_seeds(live)
    live = [s for s in live if s.alive]
    fakes = trial._generate_seeds(live)
    rung = Evaluator(trial.evaluator.data, n_rung, str(trial.device))
    found = []
    for evaluator, these in ((trial.evaluator, fakes), (rung, [f[:n_rung] for f in fakes])):
        start = time.perf_counter()
        measured = evaluator.evaluate_seeds(these)
        seconds = time.perf_counter() - start
        reports = [SeedReport(diverged_step=s.diverged_step) for s in trial.seeds if not s.alive]
        reports += [_report(m, trial) for m in measured]
        found.append((robust_objective(reports, config.metric, config.mode), seconds))
    (final, final_s), (rung_value, rung_s) = found
    return final, rung_value, final_s, rung_s


def _report(metrics: dict[str, float] | None, trial: Trial) -> SeedReport:
    if metrics is None:  # samples not finite: diverged now
        return SeedReport(diverged_step=trial.step)
    outcome = mode_outcome(metrics, trial.data.n_modes)
    outcome.pop("collapsed", None)
    return SeedReport(metrics={**metrics, **outcome})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=1000, help="training steps per trial")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for case in args.cases:
        values, n_rung = CASES[case]
        rows = []
        print(f"\n{case}: {args.steps} steps, K=3; objective {values['metric']} "
              f"({values['mode']}), final against rung sample count")  # fmt: skip
        for loss, lr_d in itertools.product(sorted(LOSSES), LR_D):
            clip = 0.05 if loss == "wasserstein" else 0.0
            config = TrialConfig.from_dict({**values, "loss": loss, "lr_d": lr_d, "clip": clip,
                                            "steps": args.steps, "device": "cpu"})  # fmt: skip
            trial = Trial(config)
            trial.train(args.steps)
            final, rung, final_s, rung_s = objectives(trial, n_rung)
            rows.append((final, rung))
            print(f"  {loss:15} lr_d {lr_d:.1e}  final {final:10.4g}  rung {rung:10.4g}  "
                  f"({trial.evaluator.n_fake}: {final_s:.2f} s, {n_rung}: {rung_s:.2f} s)",
                  flush=True)  # fmt: skip
        rho = spearmanr([r[0] for r in rows], [r[1] for r in rows]).statistic
        print(f"{case}: Spearman's rho of the rung objective against the final one over "
              f"{len(rows)} configurations: {rho:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
