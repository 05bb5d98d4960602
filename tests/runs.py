"""Run directories for the analysis tests and benchmarks, made the way a sweep makes them.

`make_run` simulates a sweep's trials (learning curves over seeds that diverge, collapse, or are
stopped by an ASHA rule at a rung) and writes each as Ray leaves it (`raytrials.write_trial`: a
result.json of `ganlab.reports` lines, checkpoints with samples.pt, error.txt for a failed
trial), then collects them with the real `ganlab.collect.Collector`: the tables, their parts
layout, the statuses (`collect.seed_status`), the objective (`objective.robust_objective`) and
collapse (`objective.mode_outcome`) are production's. `trial_table` and `metric_table` write
small hand-made rows through `results.write_part` and read them back with the tables' schema,
for tests whose aggregates are computed by hand.
"""

import dataclasses
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from raytrials import ray_error, write_trial

from ganlab import collect, results, rundir
from ganlab.config import TrialConfig
from ganlab.objective import mode_outcome, robust_objective
from ganlab.reports import EvalReport, ResultLine, RunContext, SeedReport

LOSSES = ("minimax", "non-saturating", "least-squares", "wasserstein", "hinge")
PENALTIES = ("none", "gp", "r1")
_DATASETS = {  # name: (fid scale, modes, sample shape, extractor)
    "ring8": (0.05, 8, (2,), "raw"),
    "digits": (5.0, 10, (1, 8, 8), "classifier"),
}
_LOSS_QUALITY = {"minimax": 0.6, "non-saturating": 0.0, "least-squares": 0.2,
                 "wasserstein": 0.4, "hinge": 0.1}  # fmt: skip
_LOSS_DIVERGENCE = {"minimax": 1.5, "non-saturating": 0.0, "least-squares": 0.5,
                    "wasserstein": 1.0, "hinge": 0.0}  # fmt: skip
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig) if f.name != "seeds"}
EVAL_EVERY = 100


def protocol(dataset: str) -> str:
    extractor = _DATASETS[dataset][3]
    n = 2500 if extractor == "raw" else 1000
    weights = {} if extractor == "raw" else {"weights": "3f2a9c"}
    return json.dumps({"extractor": extractor, **weights, "n_real": n, "n_fake": n,
                       "reference_split": "train", "k": 5})  # fmt: skip


def make_run(
    run_dir: str | Path,
    n_configs: int = 12,
    seeds: int = 3,
    evals: int = 10,
    dataset: str = "ring8",
    with_journal: bool = False,
    with_samples: bool = True,
    seed: int = 0,
    metric: str = "fid",
    rung: int | None = None,
) -> Path:
    """A finished sweep of `n_configs` trials × `seeds` seeds, `evals` evaluations each, in
    `run_dir`. A trial whose objective at evaluation `rung` (default: the middle one) is
    worse than two thirds of those that reached it before is stopped there (ASHA's rule with
    reduction factor 3); with 20 trials or more, one fails with an error after two reports."""
    run_dir = Path(run_dir)
    rng = np.random.default_rng(seed)
    mode = "min" if metric in ("fid", "kid", "kl_modes") else "max"
    rung = max(1, evals // 2) if rung is None else rung
    configs = _configs(rng, n_configs, seeds, evals, dataset, metric, mode)
    experiment = run_dir / rundir.EXPERIMENT
    at_rung: list[float] = []
    for index, config in enumerate(configs):
        trial_id = f"t{index:04d}"
        lines = _simulate(rng, trial_id, config, evals, dataset)
        error = None
        if n_configs >= 20 and index == n_configs // 2:
            lines = lines[:2]
            error = ray_error("RuntimeError: a worker failed (simulated)")
        elif len(lines) > rung and not lines[rung].report.last:
            value = lines[rung].report.objective
            at_rung.append(value)
            cut = np.quantile(at_rung, 1 / 3 if mode == "min" else 2 / 3)
            if (value > cut) if mode == "min" else (value < cut):
                lines = lines[: rung + 1]  # ASHA stops it at the rung
        samples = _samples(rng, config, lines[-1].report, dataset) if with_samples else None
        write_trial(experiment, trial_id, config, [line.to_dict() for line in lines],
                    samples=samples, error=error)  # fmt: skip
    collector = collect.Collector(run_dir, "synthetic-" + dataset, _no_params)
    collector.scan(collect.local(experiment))
    collector()
    if with_journal:
        write_journal(run_dir / rundir.JOURNAL, results.load(run_dir)[0])
    return run_dir


def _no_params(params: dict) -> dict:
    raise AssertionError(f"every simulated trial reports before it ends: {params}")


def _configs(
    rng: np.random.Generator, n: int, seeds: int, evals: int, dataset: str, metric: str, mode: str
) -> list[dict]:
    configs = []
    for _ in range(n):
        loss = str(rng.choice(LOSSES))
        lr_g = float(10 ** rng.uniform(-5, -2))
        fields = {"dataset": dataset, "arch": "mlp" if dataset == "ring8" else
                  str(rng.choice(["mlp", "dcgan"])), "loss": loss,
                  "clip": float(rng.uniform(0.01, 0.1)) if loss == "wasserstein" else 0.0,
                  "penalty": str(rng.choice(PENALTIES)), "spectral_norm": bool(rng.random() < 0.5),
                  "lr_g": lr_g, "lr_d": lr_g * float(rng.choice([1.0, 2.0, 4.0])),
                  "beta1": float(rng.choice([0.0, 0.5])), "d_steps": int(rng.choice([1, 2, 5])),
                  "eval_every": EVAL_EVERY, "steps": EVAL_EVERY * evals,
                  "metric": metric, "mode": mode, "seeds": list(range(seeds))}  # fmt: skip
        configs.append(TrialConfig.from_dict(fields).to_dict())
    return configs


def _simulate(
    rng: np.random.Generator, trial_id: str, config: dict, evals: int, dataset: str
) -> list[ResultLine]:
    """The trial's reports at steps 0, eval_every, ..., ending early where every seed diverged."""
    scale, n_modes, _, _ = _DATASETS[dataset]
    seeds = config["seeds"]
    log_lr = math.log10(config["lr_d"])
    penalty = config["penalty"] != "none"
    quality = (0.8 * (log_lr + 3.6) ** 2 + _LOSS_QUALITY[config["loss"]] - 0.3 * penalty
               + 0.2 * (config["d_steps"] == 5))  # fmt: skip
    risk = 4 * (log_lr + 2.6) + _LOSS_DIVERGENCE[config["loss"]] - 1.5 * penalty
    p_div = 1 / (1 + math.exp(-risk))
    diverge_at = {s: int(rng.integers(1, evals + 1)) if rng.random() < p_div else evals + 1
                  for s in seeds}  # fmt: skip
    collapse = {s: rng.random() < 0.1 + 0.1 * (config["loss"] == "minimax") for s in seeds}
    final = {s: scale * math.exp(quality + 0.25 * rng.standard_normal()) for s in seeds}
    lines = []
    for e in range(evals + 1):
        step = e * config["eval_every"]
        reports = {}
        for s in seeds:
            if e >= diverge_at[s]:
                reports[s] = SeedReport(diverged_step=step - config["eval_every"] // 2)
                continue
            fid = final[s] * (5 if collapse[s] else 1) * (1 + 20 * math.exp(-3 * e / evals))
            metrics = _metrics(rng, fid / scale, fid, n_modes, collapse[s] and e > evals // 3)
            outcome = mode_outcome(metrics, n_modes)
            collapsed = outcome.pop("collapsed", None)
            signals = {} if e == 0 else _signals(rng, e, evals, diverge_at[s])
            reports[s] = SeedReport({**metrics, **outcome}, signals, collapsed)
        live = [r for r in reports.values() if not r.diverged]
        report = EvalReport(
            step=step,
            objective=robust_objective(reports.values(), config["metric"], config["mode"]),
            div_rate=1 - len(live) / len(seeds),
            collapse_rate=sum(bool(r.collapsed) for r in live) / len(seeds),
            wall_s=0.5 * (e + 1), samples_per_s=12_800.0, device="cpu",
            protocol=protocol(dataset), last=e == evals or not live, seeds=reports,
            device_name="cpu", execution="sequential",
        )  # fmt: skip
        context = RunContext(config, "ab" * 28, 1.8e9, 1.8e9 + e, None)
        lines.append(ResultLine(report, context, trial_id, "127.0.0.1"))
        if report.last:
            break
    return lines


def _metrics(
    rng: np.random.Generator, u: float, fid: float, n_modes: int, collapsed: bool
) -> dict[str, float]:
    fid = fid * math.exp(0.05 * rng.standard_normal())
    precision = 1 / (1 + 0.2 * u)
    recall = 1 / (1 + 0.3 * u) * (0.2 if collapsed else 1.0)
    modes = 1.0 if collapsed else float(np.clip(round(n_modes * recall**0.5), 1, n_modes))
    values = {"fid": fid, "kid": fid * 0.01, "precision": precision, "recall": recall,
              "density": 1.1 * precision, "coverage": 0.9 * recall, "modes": modes,
              "hq": 0.95 * precision, "kl_modes": math.log(n_modes / modes)}  # fmt: skip
    if n_modes == 10:  # digit-like data: the classifier's Inception Score
        values["is"] = 1 + 9 * math.exp(-0.1 * u)
    return values


def _signals(rng: np.random.Generator, e: int, evals: int, diverge_at: int) -> dict[str, float]:
    near = math.exp(max(0, e - diverge_at + 3) * 2.0)  # gradients explode before divergence
    return {"loss_d": 0.6 + 0.1 * rng.standard_normal(),
            "loss_g": 1.2 + 0.3 * rng.standard_normal() + 0.5 * e / evals,
            "d_real": 0.8, "d_fake": -0.8,
            "grad_norm_d": abs(1 + 0.2 * rng.standard_normal()) * near,
            "grad_norm_g": abs(1 + 0.2 * rng.standard_normal()) * near}  # fmt: skip


def _samples(
    rng: np.random.Generator, config: dict, last: EvalReport, dataset: str
) -> dict[int, torch.Tensor] | None:
    """What each live seed drew at the trial's last evaluation, as a checkpoint keeps it."""
    keep = config["sample_keep"]
    out = {}
    for seed, report in last.seeds.items():
        if report.diverged:
            continue
        spread = 0.02 * (1 + 2 * math.sqrt(report.metrics["fid"] / _DATASETS[dataset][0]))
        if dataset == "ring8":
            angles = 2 * np.pi * np.arange(8) / 8
            centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)
            mode = rng.integers(0, 8, keep) if not report.collapsed else np.zeros(keep, int)
            x = centres[mode] + spread * rng.standard_normal((keep, 2))
        else:
            x = np.clip(rng.standard_normal((keep, 1, 8, 8)) * min(1.0, spread), -1, 1)
        out[seed] = torch.from_numpy(x.astype(np.float32))
    return out or None


def write_journal(path: Path, trials: pd.DataFrame) -> None:
    """An Optuna journal study named after the sweep, one trial per Tune trial."""
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    mode = trials["mode"].iloc[0]
    study = optuna.create_study(study_name=trials["sweep"].iloc[0], storage=storage,
                                direction="minimize" if mode == "min" else "maximize")  # fmt: skip
    per_trial = trials.drop_duplicates("trial_id")
    searched = [c for c in results.CONFIG_COLUMNS if per_trial[c].nunique() > 1]
    distributions = {name: _distribution(per_trial[name].dropna()) for name in searched}
    states = {"error": optuna.trial.TrialState.FAIL, "pruned": optuna.trial.TrialState.PRUNED}
    for _, row in per_trial.iterrows():
        state = states.get(row["status"], optuna.trial.TrialState.COMPLETE)
        complete = state == optuna.trial.TrialState.COMPLETE
        params = {name: _python(row[name]) for name in searched if row[name] == row[name]}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params},
            value=float(row["objective"]) if complete else None, state=state))  # fmt: skip


def _distribution(column: pd.Series):
    import optuna

    if column.dtype.kind == "f" and column.nunique() > 6:
        return optuna.distributions.FloatDistribution(column.min(), column.max(), log=True)
    return optuna.distributions.CategoricalDistribution(sorted(map(_python, column.unique())))


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --- hand-made tables ---------------------------------------------------------------------------


def trial_table(rows: list[dict[str, Any]], sweep: str = "hand") -> pd.DataFrame:
    """A trials table of `rows` (partial dicts, each with `trial_id` and `seed`), written as a
    part and read back with the table's schema. Configuration fields default to TrialConfig's
    (`config_id` to the hash of the configuration), metrics to NaN, status to `completed`."""
    filled = []
    for row in rows:
        config = {**_DEFAULTS, **{k: v for k, v in row.items() if k in results.CONFIG_COLUMNS}}
        base = {
            "sweep": sweep,
            "config_id": results.config_hash(config),
            "status": "completed",
            "objective": math.nan,
            "div_rate": 0.0,
            "steps_done": config["steps"],
            "protocol": protocol("ring8"),
            "ganlab_version": "0.1.0",
            "git_sha": "0" * 40,
        }
        filled.append({**base, **config, **row})  # fmt: skip
    return _round_trip(rundir.TRIALS, filled)


def metric_table(rows: list[dict[str, Any]], sweep: str = "hand") -> pd.DataFrame:
    """A metrics table of `rows` (partial dicts with trial_id, config_id, seed, step), the
    other columns missing (NaN, `diverged` False), written and read back as `trial_table`."""
    base = {"sweep": sweep, "diverged": False, "protocol": protocol("ring8")}
    return _round_trip(rundir.METRICS_TABLE, [{**base, **row} for row in rows])


def _round_trip(table: str, rows: list[dict]) -> pd.DataFrame:
    names = results.SCHEMAS[table].names
    rows = [{name: row.get(name) for name in names} for row in rows]
    with tempfile.TemporaryDirectory() as tmp:
        results.write_part(Path(tmp) / table, "rows", rows)
        return results.read_table(Path(tmp) / table)
