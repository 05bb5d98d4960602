"""Synthetic run directories with the exact results-table schema, for tests and the benchmark.

`make_run` writes `trials.parquet`, `metrics.parquet` and `samples.parquet` (and optionally an
Optuna journal study) the way a finished sweep leaves them: seeds that diverge (NaNs from that
step on), collapse, a pruned trial or two and an errored one, so the report meets every case.
`trial_rows` builds small hand-made trials tables whose aggregates are computed by hand.

Everything is vectorised over (trial, seed, evaluation) so 10,000 rows × 50 evaluations take a
second or two.
"""

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ganlab.config import TrialConfig
from ganlab.metrics import METRICS
from ganlab.results import (
    CONFIG_COLUMNS,
    METRIC_COLUMNS,
    METRICS_TABLE,
    SAMPLE_COLUMNS,
    SAMPLES,
    SIGNALS,
    TRIAL_COLUMNS,
    TRIALS,
    write_table,
)
from ganlab.rundir import JOURNAL

# Registry names, kept literal so that the fixture does not import torch (ganlab.losses does).
LOSSES = ("minimax", "non-saturating", "least-squares", "wasserstein", "hinge")
PENALTIES = ("none", "gp", "r1")

_DATASETS = {  # name: (fid scale, modes, sample shape, extractor)
    "ring8": (0.05, 8, (2,), "raw"),
    "digits": (5.0, 10, (1, 8, 8), "classifier"),
}
_LOSS_QUALITY = {
    "minimax": 0.6,
    "non-saturating": 0.0,
    "least-squares": 0.2,
    "wasserstein": 0.4,
    "hinge": 0.1,
}
_LOSS_DIVERGENCE = {
    "minimax": 1.5,
    "non-saturating": 0.0,
    "least-squares": 0.5,
    "wasserstein": 1.0,
    "hinge": 0.0,
}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig) if f.name != "seeds"}


def config_id(config: dict[str, Any]) -> str:
    """A short hash of a configuration without its seeds, like the trial's."""
    text = json.dumps({k: config[k] for k in CONFIG_COLUMNS}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def protocol(dataset: str) -> str:
    _, _, _, extractor = _DATASETS[dataset]
    n = 2500 if extractor == "raw" else 1000
    return json.dumps(
        {
            "extractor": extractor,
            "weights_sha256": None if extractor == "raw" else "3f2a9c",
            "n_real": n,
            "n_fake": n,
            "reference_split": "train",
            "k": 5,
        }
    )


def trial_rows(rows: list[dict[str, Any]], sweep: str = "hand") -> pd.DataFrame:
    """A trials table holding `rows` (partial dicts), every other schema column filled.

    Each row needs `trial_id` and `seed`; configuration fields default to TrialConfig's,
    metrics to NaN, status to "completed", and `config_id` to the hash of the configuration.
    """
    filled = []
    for row in rows:
        config = {**_DEFAULTS, **{k: v for k, v in row.items() if k in CONFIG_COLUMNS}}
        base = {
            "sweep": sweep,
            "config_id": config_id(config),
            "status": "completed",
            "diverged_step": None,
            "objective": np.nan,
            "div_rate": 0.0,
            **{f"{kind}_{m}": np.nan for kind in ("final", "best") for m in METRICS},
            "steps_done": config["steps"],
            "wall_s": 1.0,
            "started_at": 1.8e9,
            "ended_at": 1.8e9 + 1.0,
            "device_used": "cpu",
            "device_name": "cpu",
            "reseeded_step": None,
            "node": "node-0",
            "node_ip": "127.0.0.1",
            "protocol": protocol("ring8"),
            "ganlab_version": "0.1.0",
            "git_sha": "0" * 40,
        }
        filled.append({**base, **config, **row})
    frame = pd.DataFrame(filled, columns=list(TRIAL_COLUMNS))
    frame["diverged_step"] = frame["diverged_step"].astype("Int64")
    frame["n_eval"] = frame["n_eval"].astype("Int64")
    frame["reseeded_step"] = frame["reseeded_step"].astype("Int64")
    return frame


def metric_rows(rows: list[dict[str, Any]], sweep: str = "hand") -> pd.DataFrame:
    """A metrics table holding `rows` (partial dicts with trial_id, config_id, seed, step),
    every other schema column NaN (`diverged` False)."""
    base = {"sweep": sweep, "diverged": False, "protocol": protocol("ring8")}
    frame = pd.DataFrame([{**base, **row} for row in rows], columns=list(METRIC_COLUMNS))
    return frame.astype({name: float for name in (*METRICS, *SIGNALS, "objective", "div_rate")})


def make_run(
    run_dir: str | Path,
    n_configs: int = 12,
    seeds: int = 3,
    evals: int = 10,
    dataset: str = "ring8",
    with_journal: bool = False,
    with_samples: bool = True,
    seed: int = 0,
) -> Path:
    """Write a synthetic finished sweep of `n_configs` trials × `seeds` seeds into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    configs = _sample_configs(rng, n_configs, seeds, evals, dataset)
    sim = _simulate(rng, configs, seeds, evals, dataset)
    trials = _trials_table(configs, sim, seeds, dataset)
    write_table(trials, run_dir / TRIALS)
    write_table(_metrics_table(configs, sim, seeds, evals), run_dir / METRICS_TABLE)
    if with_samples:
        write_table(_samples_table(rng, trials, sim, dataset), run_dir / SAMPLES)
    if with_journal:
        write_journal(run_dir / JOURNAL, trials)
    return run_dir


def write_journal(path: Path, trials: pd.DataFrame) -> None:
    """An Optuna journal study named after the sweep, one trial per Tune trial."""
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    mode = trials["mode"].iloc[0]
    study = optuna.create_study(
        study_name=trials["sweep"].iloc[0],
        storage=storage,
        direction="minimize" if mode == "min" else "maximize",
    )
    per_trial = trials.drop_duplicates("trial_id")
    searched = [c for c in CONFIG_COLUMNS if per_trial[c].nunique() > 1]
    distributions = {name: _distribution(per_trial[name]) for name in searched}
    states = {"error": optuna.trial.TrialState.FAIL, "pruned": optuna.trial.TrialState.PRUNED}
    for _, row in per_trial.iterrows():
        state = states.get(row["status"], optuna.trial.TrialState.COMPLETE)
        complete = state == optuna.trial.TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(
                params={name: _python(row[name]) for name in searched},
                distributions=distributions,
                value=float(row["objective"]) if complete else None,
                state=state,
            )
        )


def _distribution(column: pd.Series):
    import optuna

    if column.dtype.kind == "f" and column.nunique() > 6:
        return optuna.distributions.FloatDistribution(column.min(), column.max(), log=True)
    return optuna.distributions.CategoricalDistribution(sorted(map(_python, column.unique())))


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sample_configs(
    rng: np.random.Generator, n: int, seeds: int, evals: int, dataset: str
) -> pd.DataFrame:
    lr_g = 10 ** rng.uniform(-5, -2, n)
    configs = pd.DataFrame({name: [value] * n for name, value in _DEFAULTS.items()})
    configs["dataset"] = dataset
    configs["arch"] = "mlp" if dataset == "ring8" else rng.choice(["mlp", "dcgan"], n)
    configs["loss"] = rng.choice(LOSSES, n)
    configs["penalty"] = rng.choice(PENALTIES, n)
    configs["spectral_norm"] = rng.random(n) < 0.5
    configs["lr_g"] = lr_g
    configs["lr_d"] = lr_g * rng.choice([1.0, 2.0, 4.0], n)  # TTUR
    configs["beta1"] = rng.choice([0.0, 0.5], n)
    configs["d_steps"] = rng.choice([1, 2, 5], n)
    configs["eval_every"] = 100
    configs["steps"] = 100 * evals
    configs["n_eval"] = pd.array([None] * n, dtype="Int64")
    configs["config_id"] = [config_id(row) for row in configs.to_dict("records")]
    configs["trial_id"] = [f"trial_{i:05d}" for i in range(n)]
    return configs


def _simulate(
    rng: np.random.Generator, configs: pd.DataFrame, seeds: int, evals: int, dataset: str
) -> dict[str, np.ndarray]:
    """Metric curves of shape (trial, seed, evaluation), NaN after a seed diverges."""
    n = len(configs)
    scale, n_modes, _, _ = _DATASETS[dataset]
    log_lr = np.log10(configs["lr_d"].to_numpy())
    has_penalty = (configs["penalty"] != "none").to_numpy()
    quality = (
        0.8 * (log_lr + 3.6) ** 2
        + configs["loss"].map(_LOSS_QUALITY).to_numpy()
        - 0.3 * has_penalty
        + 0.2 * (configs["d_steps"] == 5).to_numpy()
    )
    risk = (
        4 * (log_lr + 2.6) + configs["loss"].map(_LOSS_DIVERGENCE).to_numpy() - 1.5 * has_penalty
    )
    p_div = 1 / (1 + np.exp(-risk))
    shape = (n, seeds)
    diverged = rng.random(shape) < p_div[:, None]
    div_at = np.where(diverged, rng.integers(1, evals + 1, shape), evals + 1)  # 1-based eval
    collapsed = ~diverged & (
        rng.random(shape) < 0.1 + 0.1 * (configs["loss"] == "minimax").to_numpy()[:, None]
    )
    pruned = rng.random(n) < 0.08
    pruned_at = np.where(pruned, max(1, evals // 2), evals)  # last evaluation reached
    error = np.zeros(n, bool)
    if n >= 20:
        error[n // 2] = True  # one trial whose worker raised: no metrics at all
    pruned &= ~error

    e = np.arange(1, evals + 1)[None, None, :]
    final = scale * np.exp(quality[:, None] + 0.25 * rng.standard_normal(shape))
    final = np.where(collapsed, 5 * final, final)
    fid = final[..., None] * (1 + 20 * np.exp(-3 * e / evals))
    fid = fid * np.exp(0.05 * rng.standard_normal(fid.shape))
    dead = e >= div_at[..., None]  # the diverging evaluation is already non-finite
    u = fid / scale
    out = {"fid": fid, "kid": fid * 0.01 * np.exp(0.1 * rng.standard_normal(fid.shape))}
    out["precision"] = 1 / (1 + 0.2 * u)
    out["recall"] = 1 / (1 + 0.3 * u) * np.where(collapsed, 0.2, 1.0)[..., None]
    out["density"] = 1.1 * out["precision"]
    out["coverage"] = 0.9 * out["recall"]
    out["is"] = (1 + 9 * np.exp(-0.1 * u)) if dataset == "digits" else np.full(fid.shape, np.nan)
    modes = np.clip(np.round(n_modes * out["recall"] ** 0.5), 1, n_modes)
    out["modes"] = np.where(collapsed[..., None], 1.0, modes)
    out["hq"] = 0.95 * out["precision"]
    out["kl_modes"] = np.log(n_modes / out["modes"])
    out["good_modes"] = out["hq"] * n_modes * np.exp(-out["kl_modes"])  # ganlab.objective
    steps_shape = fid.shape
    out["loss_d"] = 0.6 + 0.1 * rng.standard_normal(steps_shape)
    out["loss_g"] = 1.2 + 0.3 * rng.standard_normal(steps_shape) + 0.5 * e / evals
    out["d_real"] = 0.8 + 0.1 * rng.standard_normal(steps_shape)
    out["d_fake"] = -0.8 + 0.1 * rng.standard_normal(steps_shape)
    near = np.exp(np.clip(e - div_at[..., None] + 3, 0, None) * 2.0)  # explodes before diverging
    out["grad_norm_d"] = np.abs(1 + 0.2 * rng.standard_normal(steps_shape)) * near
    out["grad_norm_g"] = np.abs(1 + 0.2 * rng.standard_normal(steps_shape)) * near
    for name in list(out):
        out[name] = np.where(dead, np.nan, out[name])
    out["wall_s"] = np.broadcast_to(0.5 * e * (1 + 0.1 * rng.random((n, 1, 1))), steps_shape)
    out["samples_per_s"] = np.broadcast_to(
        64 / 0.005 * rng.uniform(0.9, 1.1, (n, 1, 1)), steps_shape
    )
    out["diverged"] = np.broadcast_to(dead, steps_shape)
    # The robust objective at each step: median over seeds, a diverged seed counted as worst.
    worst = METRICS["fid"].worst
    out["objective"] = np.broadcast_to(
        np.median(np.where(dead, worst, fid), axis=1, keepdims=True), steps_shape
    )
    out["div_rate"] = np.broadcast_to(dead.mean(axis=1, keepdims=True), steps_shape)
    out.update(
        diverged_at=div_at, collapsed=collapsed, pruned=pruned, pruned_at=pruned_at, error=error
    )
    return out


def _status(sim: dict[str, np.ndarray]) -> np.ndarray:
    div_at, pruned_at = sim["diverged_at"], sim["pruned_at"][:, None]
    diverged = div_at <= pruned_at
    status = np.full(div_at.shape, "completed", dtype=object)
    status[sim["collapsed"]] = "collapsed"
    status[np.broadcast_to(sim["pruned"][:, None], status.shape)] = "pruned"
    status[diverged] = "diverged"
    status[sim["error"]] = "error"
    return status


def _trials_table(
    configs: pd.DataFrame, sim: dict[str, np.ndarray], seeds: int, dataset: str
) -> pd.DataFrame:
    n = len(configs)
    status = _status(sim)
    idx = np.repeat(np.arange(n), seeds)
    frame = configs.iloc[idx].reset_index(drop=True)
    frame.insert(0, "sweep", f"synthetic-{dataset}")
    frame["seed"] = np.tile(np.arange(seeds), n)
    frame["status"] = status.ravel()
    frame["error"] = np.where(status.ravel() == "error", "RuntimeError: synthetic failure", "")
    last = sim["pruned_at"] - 1  # 0-based index of the last evaluation reached
    diverged = status == "diverged"
    every = configs["eval_every"].to_numpy()[:, None]
    frame["diverged_step"] = pd.array(
        np.where(diverged, sim["diverged_at"] * every, 0).ravel(), dtype="Int64"
    )
    frame.loc[~diverged.ravel(), "diverged_step"] = pd.NA
    rows = np.arange(n)
    objective = sim["objective"][rows, 0, last]
    objective[sim["error"]] = np.nan
    frame["objective"] = np.repeat(objective, seeds)
    div_rate = sim["div_rate"][rows, 0, last]
    div_rate[sim["error"]] = np.nan
    frame["div_rate"] = np.repeat(div_rate, seeds)
    for m in METRICS:
        values = sim[m][rows, :, :]
        reached = np.arange(values.shape[-1])[None, None, :] <= last[:, None, None]
        values = np.where(reached, values, np.nan)
        final = values[rows, :, last]
        best_fn = np.nanmin if METRICS[m].mode == "min" else np.nanmax
        with warnings.catch_warnings():  # an errored trial's seeds are all NaN, as expected
            warnings.simplefilter("ignore", RuntimeWarning)
            best = best_fn(values, axis=2)
        final[sim["error"]] = np.nan
        best[sim["error"]] = np.nan
        frame[f"final_{m}"] = final.ravel()
        frame[f"best_{m}"] = best.ravel()
    steps_done = np.minimum(sim["diverged_at"], sim["pruned_at"][:, None]) * every
    steps_done[sim["error"]] = 0
    frame["steps_done"] = steps_done.ravel()
    frame["wall_s"] = sim["wall_s"][rows, :, last].ravel()
    frame["started_at"] = 1.8e9 + np.arange(len(frame), dtype=float)
    frame["ended_at"] = frame["started_at"] + frame["wall_s"]
    frame["device_used"] = "cpu"
    frame["device_name"] = "cpu"
    frame["reseeded_step"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["node"] = "node-0"
    frame["node_ip"] = "127.0.0.1"  # schema columns not in TRIAL_COLUMNS are dropped below
    frame["protocol"] = protocol(dataset)
    frame["ganlab_version"] = "0.1.0"
    frame["git_sha"] = "0123456789abcdef" * 2 + "01234567"
    return frame[list(TRIAL_COLUMNS)]


def _metrics_table(
    configs: pd.DataFrame, sim: dict[str, np.ndarray], seeds: int, evals: int
) -> pd.DataFrame:
    n = len(configs)
    t, s, e = np.meshgrid(np.arange(n), np.arange(seeds), np.arange(evals), indexing="ij")
    keep = (e < sim["pruned_at"][:, None, None]) & ~sim["error"][:, None, None]
    t, s, e = t[keep], s[keep], e[keep]
    frame = pd.DataFrame(
        {
            "sweep": f"synthetic-{configs['dataset'].iloc[0]}",
            "trial_id": configs["trial_id"].to_numpy()[t],
            "config_id": configs["config_id"].to_numpy()[t],
            "seed": s.astype(np.int64),
            "step": ((e + 1) * configs["eval_every"].to_numpy()[t]).astype(np.int64),
            "diverged": sim["diverged"][keep],
        }
    )
    for name in (*METRICS, *SIGNALS, "objective", "div_rate"):
        frame[name] = sim[name][keep].astype(np.float64)
    frame["protocol"] = protocol(configs["dataset"].iloc[0])
    return frame[list(METRIC_COLUMNS)]


def _samples_table(
    rng: np.random.Generator, trials: pd.DataFrame, sim: dict[str, np.ndarray], dataset: str
) -> pd.DataFrame:
    _, _, shape, _ = _DATASETS[dataset]
    alive = trials[~trials["status"].isin(["diverged", "error"])]
    keep = int(alive["sample_keep"].iloc[0]) if len(alive) else 64
    quality = (alive["final_fid"].to_numpy() / _DATASETS[dataset][0])[:, None]
    collapsed = (alive["status"] == "collapsed").to_numpy()[:, None]
    n = len(alive)
    if dataset == "ring8":
        angles = 2 * np.pi * np.arange(8) / 8
        centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)
        mode = np.where(collapsed, rng.integers(0, 8, (n, 1)), rng.integers(0, 8, (n, keep)))
        noise = 0.02 * (1 + 2 * np.sqrt(quality))[..., None]
        fake = centres[mode] + noise * rng.standard_normal((n, keep, 2))
        real = centres[rng.integers(0, 8, 512)] + 0.02 * rng.standard_normal((512, 2))
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images / 8.0 - 1.0  # [0, 16] -> [-1, 1]
        pick = rng.integers(0, len(images), (n, keep))
        one_digit = np.flatnonzero(digits.target == 3)
        pick = np.where(collapsed, rng.choice(one_digit, (n, keep)), pick)
        noise = 0.15 * np.sqrt(quality)[..., None, None]
        fake = np.clip(images[pick] + noise * rng.standard_normal((n, keep, 8, 8)), -1, 1)
        fake = fake[:, :, None]  # (N, C=1, H, W)
        real = images[rng.integers(0, len(images), keep)][:, None]
    fake = fake.astype(np.float32).reshape(n, -1)
    last_step = alive["steps_done"].to_numpy()
    frame = pd.DataFrame(
        {
            "sweep": alive["sweep"].to_numpy(),
            "trial_id": alive["trial_id"].to_numpy(),
            "config_id": alive["config_id"].to_numpy(),
            "seed": alive["seed"].to_numpy(),
            "step": last_step.astype(np.int64),
            "source": "fake",
            "dataset": dataset,
            "shape": [[keep, *shape]] * n,
            "values": list(fake),
        }
    )
    real_row = pd.DataFrame(
        {
            "sweep": [trials["sweep"].iloc[0]],
            "trial_id": [""],
            "config_id": [""],
            "seed": [-1],
            "step": [0],
            "source": ["real"],
            "dataset": [dataset],
            "shape": [[len(real), *shape]],
            "values": [real.astype(np.float32).ravel()],
        }
    )
    return pd.concat([frame, real_row], ignore_index=True)[list(SAMPLE_COLUMNS)]
