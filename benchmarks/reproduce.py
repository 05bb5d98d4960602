"""Run a recipe of `sweeps/` and print our numbers beside the published table it reproduces.

    python benchmarks/reproduce.py grid25_packing              # the shipped budget
    python benchmarks/reproduce.py grid25_packing --smoke      # tiny sizes, seconds
    python benchmarks/reproduce.py quickstart --workers 2

A grid recipe (`search_alg: grid`) runs here, one process per configuration (at most
`--workers` at once, one thread each), each training the recipe's seeds with `ganlab.trial`;
nothing of Ray. A searched recipe runs as `ganlab sweep` into `--storage` and is read back from
its tables, keeping each level's best configuration (tuned, as the papers compare) retrained
on fresh seeds (`ganlab confirm`, `Published.confirm_seeds` of them). Either way the result is
one row per (configuration, seed), grouped by the recipe's factor: each group shows the median
and the per-seed values of every compared metric, so the seeds behind each number are in plain
view, beside the paper's mean ± std. The recipe's claim is then tested with pre-registered
statistics (`analysis.stats`: permutation tests with Holm's correction, effect sizes with
bootstrap intervals, equivalence tests, a power line) and given a verdict: `supported`, `not
supported` or `inconclusive` (`CHECKS`).
"""

import argparse
import itertools
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # analysis.stats, run from anywhere

from analysis import stats  # noqa: E402
from analysis.stats import ALPHA  # noqa: E402


class Published(NamedTuple):
    """A published table: where it is from and its rows, keyed by the factor's level."""

    source: str
    factor: str  # the sweep field the table varies
    metrics: tuple[str, ...]  # ganlab metric names the table reports, in its column order
    rows: dict[Any, tuple[str, ...]]  # level -> the paper's cells, as printed there
    claim: str  # the direction a reproduction must show
    per_level: int = 0  # searched recipes: configurations each level's own search samples
    effect: float = 0.0  # the smallest effect of interest the power line is computed for
    margin: float = 0.0  # equivalence margin ("similar hq", "no level dominates")
    fields: tuple[str, ...] = ()  # a factor made of several sweep fields: their values joined
    arms: dict[str, dict[str, Any]] | None = None  # level -> fields changed in the sweep file
    ceiling: float = math.inf  # the most the tested metric can reach (modes: the data's modes)
    confirm_seeds: int = 0  # searched recipes: fresh seeds each level's best retrains on (0: the
    # recipe's own number); the power line of a smaller run says how many the claim needs


R3GAN, BASELINE = "rpgan + r1+r2", "non-saturating + r1"  # the cells r3gan_* compare

PUBLISHED: dict[str, Published] = {
    "grid25_packing": Published(
        "PacGAN (Lin et al. 2018), Table 1, 2D-grid: mean ± std over 10 runs",
        "pack",
        ("modes", "hq", "kl_modes"),
        {
            1: ("17.3 ± 0.8", "94.8 ± 0.7 %", "0.70 ± 0.07"),
            2: ("23.8 ± 0.7", "91.3 ± 0.8 %", "0.13 ± 0.04"),
            3: ("24.6 ± 0.4", "94.2 ± 0.4 %", "0.06 ± 0.02"),
            4: ("24.8 ± 0.2", "93.5 ± 0.6 %", "0.04 ± 0.01"),
        },
        "packing raises the modes captured (pack 2-4 above pack 1) at a similar high-quality "
        "share; the unpacked GAN misses some of the 25 modes",
        effect=1.0,  # one more mode of 25
        margin=0.05,  # "similar hq": within 5 points (PacGAN's packs span 91.3-94.8 %)
    ),
    "quickstart": Published(
        "PacGAN (Lin et al. 2018), Table 1, 2D-ring, vanilla GAN (their MLP, pack 1); "
        "Lucic et al. 2018: no loss dominates once its rates are tuned",
        "loss",
        ("modes", "hq", "kl_modes"),
        {"non-saturating": ("6.3 ± 0.5", "98.2 ± 0.2 %", "0.45 ± 0.09")},
        "with tuned rates most losses capture all 8 modes at a high high-quality share",
        per_level=6,
        effect=0.9,  # a loss whose seeds find every mode 9 times in 10
        confirm_seeds=15,  # 80 % power at that effect (the 3-seed run's power line)
    ),
    "digits_losses": Published(
        "Lucic et al. 2018 (Are GANs created equal?): the best FID per loss after a tuned "
        "search lies within the spread of the others",
        "loss",
        ("fid", "modes", "hq"),
        {},
        "no loss dominates once tuned: the best configurations' intervals overlap",
        per_level=8,
        effect=5.0,  # 5 FID: half the spread of one loss's seeds in the last run
        margin=5.0,  # "no loss dominates": the best within 5 FID of another
        confirm_seeds=10,  # with ± 9 FID a seed, more than 50 show ± 5 FID: 10 is what fits
    ),
    "r3gan_modes": Published(
        'Huang et al. 2024 (R3GAN, "The GAN is dead; long live the GAN!"): RpGAN + R1 + R2 '
        "captures all 1,000 StackedMNIST modes (KL 0.029) and keeps a toy mixture's modes "
        "where non-saturating + R1 drops some",
        "loss_penalty",
        ("modes", "hq", "kl_modes"),
        {},
        f"{R3GAN} covers more of grid25's modes than {BASELINE}, and more stably (fewer seeds "
        "diverge, collapse or drop half the modes), at equal budget",
        effect=1.0,  # one more mode of 25
        fields=("loss", "penalty"),
        ceiling=25,
    ),
    "r3gan_stacked": Published(
        'Huang et al. 2024 (R3GAN, "The GAN is dead; long live the GAN!"), StackedMNIST: '
        "RpGAN + R1 + R2 captures all 1,000 modes (KL 0.029 to uniform)",
        "loss_penalty",
        ("modes", "hq", "kl_modes"),
        {R3GAN: ("1000", "–", "0.029")},
        f"{R3GAN} covers more of stacked-digits' 1,000 modes than {BASELINE}, and more stably "
        "(fewer seeds diverge, collapse or drop half the modes), at equal budget",
        effect=10.0,  # ten more modes of 1,000
        fields=("loss", "penalty"),
        ceiling=1000,
    ),
    "pbt_ring8": Published(
        "Jaderberg et al. 2017 (Population Based Training): PBT over both Adam rates trains "
        "GANs to a better Inception score than their tuned fixed-rate baseline",
        "arm",
        ("good_modes", "modes", "hq"),
        {},
        "PBT's population ends with a higher objective (good_modes) than the same starting "
        "population trained at its starting rates (PBT with no exploit), at equal budget",
        effect=0.5,  # half a good mode of 8
        # The fixed arm is PBT with an empty bottom quantile: Tune draws the same population
        # from the same `search_seed`, trains it through the same scheduler, and never exploits.
        arms={"pbt": {}, "fixed": {"scheduler": {"name": "pbt", "quantile_fraction": 0.0}}},
    ),
}


# --- running -------------------------------------------------------------------------------------


def grid_points(spec) -> list[dict[str, Any]]:
    """Every point of a grid recipe's search, in file order."""
    names = [p.name for p in spec.search]
    return [dict(zip(names, values, strict=True)) for values in
            itertools.product(*(p.values for p in spec.search))]  # fmt: skip


def run_point(config_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one configuration over its seeds (in a worker process); one row per seed."""
    import torch

    torch.set_num_threads(1)
    from ganlab.collect import seed_status
    from ganlab.config import TrialConfig
    from ganlab.trial import Trial

    config = TrialConfig.from_dict(config_dict)
    start = time.perf_counter()
    last = Trial(config).run()[-1]
    wall = time.perf_counter() - start
    rows = []
    for seed, values in last.seeds.items():
        status = seed_status(values, last, False, config.steps)  # the tables' rule
        rows.append({**config_dict, "seed": seed, "status": status, "wall_s": wall,
                     **{f"final_{k}": v for k, v in values.metrics.items()}})  # fmt: skip
    return rows


def run_grid(spec, workers: int) -> pd.DataFrame:
    """Every grid point over the recipe's seeds, `workers` configurations at a time."""
    configs = [spec.trial_config(point).to_dict() for point in grid_points(spec)]
    os.environ["OMP_NUM_THREADS"] = "1"
    points = grid_points(spec)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_point, config) for config in configs]
        for done, future in enumerate(as_completed(futures), 1):  # progress, as they end
            point = points[futures.index(future)]
            rows = future.result()
            print(f"[{done}/{len(futures)}] {point}: {len(rows)} seeds trained in "
                  f"{rows[0]['wall_s']:.0f} s", flush=True)  # fmt: skip
        rows = [row for future in futures for row in future.result()]  # in the grid's order
    return pd.DataFrame(rows)


def run_sweep(path: Path, smoke: bool, storage: Path, confirm_seeds: int) -> pd.DataFrame:
    """`ganlab sweep` the recipe into `storage`, `ganlab confirm` its best configuration on
    `confirm_seeds` fresh seeds (none: not confirmed), and read its trials table back (both
    phases)."""
    from ganlab import results, spec

    cli = [sys.executable, "-m", "ganlab.cli"]
    command = [*cli, "sweep", str(path), "--storage", str(storage), "--no-report"]
    subprocess.run(command + (["--smoke"] if smoke else []), check=True)
    run_dir = storage / (spec.load(path, smoke=smoke).name + ("-smoke" if smoke else ""))
    if confirm_seeds:
        subprocess.run([*cli, "confirm", str(run_dir), "--top", "1", "--seeds",
                        str(confirm_seeds), "--no-report"], check=True)  # fmt: skip
    trials, _ = results.load(run_dir)
    return trials


def run_arms(path: Path, published: Published, smoke: bool, storage: Path) -> pd.DataFrame:
    """The recipe's sweep once per arm (`published.arms`: the file with those fields changed,
    at `--smoke` too), its trials tables joined with the arm as `published.factor`. Not
    confirmed on fresh seeds: a PBT trial's hyperparameters change as it trains, so there is
    no one configuration to retrain."""
    frames = []
    for arm, file in arm_files(path, published, storage).items():
        swept = run_sweep(file, smoke, storage, 0)
        frames.append(swept.assign(**{published.factor: arm}))
    return pd.concat(frames, ignore_index=True)


def arm_files(path: Path, published: Published, storage: Path) -> dict[str, Path]:
    """Each arm's sweep file, written into `storage`: the recipe's with the arm's fields
    changed, its `smoke:` section kept but for those fields."""
    from ganlab.spec import read_file

    raw = read_file(path)
    files = {}
    for arm, changed in published.arms.items():
        smoke_part = {k: v for k, v in raw.get("smoke", {}).items() if k not in changed}
        variant = {**raw, **changed, "name": f"{raw['name']}-{arm}", "smoke": smoke_part}
        files[arm] = write_variant(storage, variant, path, arm)
    return files


def write_variant(storage: Path, variant: dict[str, Any], source: Path, what: str) -> Path:
    """A variant of the recipe's sweep file `source`, written into `storage` under its name."""
    import yaml

    storage.mkdir(parents=True, exist_ok=True)
    path = storage / f"{variant['name']}.yaml"
    text = yaml.safe_dump(variant, sort_keys=False)
    path.write_text(f"# {source.name}, {what} (reproduce.py)\n{text}")
    return path


def level_sweep(raw: dict[str, Any], factor: str, level: Any, per_level: int) -> dict[str, Any]:
    """The recipe's sweep file with `factor` fixed at `level` and a search of its own over the
    other fields, `per_level` configurations: every level tuned with the same budget, as Lucic
    et al. compare models. A field searched only `when` the factor has other values is dropped."""
    search = {}
    for name, body in raw["search"].items():
        wanted = (body.get("when") or {}).get(factor)
        wanted = wanted if wanted is None or isinstance(wanted, list) else [wanted]
        if name == factor or (wanted is not None and level not in wanted):
            continue
        when = {k: v for k, v in (body.get("when") or {}).items() if k != factor}
        search[name] = {**{k: v for k, v in body.items() if k != "when"},
                        **({"when": when} if when else {})}  # fmt: skip
    return {**raw, "name": f"{raw['name']}-{factor}-{level}", "num_samples": per_level,
            "base": {**raw["base"], factor: level}, "search": search}  # fmt: skip


def run_levels(
    path: Path, published: Published, smoke: bool, storage: Path, confirm_seeds: int
) -> pd.DataFrame:
    """One sweep per level of the recipe's factor (`level_sweep`), each level's best confirmed
    on fresh seeds, their trials tables joined."""
    from ganlab.spec import read_file

    raw = read_file(path)
    frames = []
    for level in raw["search"][published.factor]["choice"]:
        variant = level_sweep(raw, published.factor, level, published.per_level)
        written = write_variant(storage, variant, path, f"{published.factor}: {level}")
        frames.append(run_sweep(written, smoke, storage, confirm_seeds))
    return pd.concat(frames, ignore_index=True)


# --- comparing -----------------------------------------------------------------------------------


def best_per_level(frame: pd.DataFrame, factor: str) -> pd.DataFrame:
    """A searched recipe's seed rows of each level's best configuration, by the tables' one
    ranking (`ganlab.results.ranking`, as `ganlab results` and the report rank): what "once
    tuned" means in the published claims. A configuration stopped early (ASHA, a time budget,
    every seed diverged) is never the best: its objective is from a shorter run. Where the
    levels were confirmed (`ganlab confirm`), the rows are the confirmation's fresh seeds."""
    from ganlab.results import ranking, shown_rows

    frame, _ = shown_rows(frame)
    ranked = ranking(frame)
    ranked = ranked[~ranked["stopped"] & ranked["objective"].notna()]
    levels = frame.drop_duplicates("config_id").set_index("config_id")[factor]
    best = levels.reindex(ranked.index).drop_duplicates().index
    return frame[frame["config_id"].isin(best)]


def level_column(frame: pd.DataFrame, published: Published) -> pd.Series:
    """A factor of several sweep fields (`published.fields`): one level per combination, their
    values joined by " + " (r3gan_modes: "rpgan + r1+r2")."""
    return frame[list(published.fields)].astype(str).agg(" + ".join, axis=1)


def group_rows(frame: pd.DataFrame, factor: str, metrics: tuple[str, ...]) -> list[dict]:
    """Per level of `factor`: seeds, diverged, collapsed and mode-dropping counts, and each
    metric's per-seed values over the seeds that did not diverge. Pruned seeds (stopped early)
    are left out of every count: the rates' denominators are seeds that trained to the end or
    diverged."""
    rows = []
    frame = frame[frame["status"] != "pruned"]
    for level, group in frame.groupby(factor, sort=True):
        alive = group[group["status"] != "diverged"]
        dropping = alive.get("final_mode_dropping", pd.Series(dtype=float))
        failed = (group["status"].isin(["diverged", "collapsed"])
                  | group.index.isin(dropping[dropping > 0.5].index))  # fmt: skip
        row = {factor: level, "seeds": len(group),
               "diverged": int((group["status"] == "diverged").sum()),
               "collapsed": int((group["status"] == "collapsed").sum()),
               "dropping": int((dropping > 0.5).sum()), "failed": int(failed.sum())}  # fmt: skip
        for m in metrics:
            values = alive[f"final_{m}"].dropna().tolist()
            row[m] = values
        if {"trial_id", "objective"} <= set(group.columns):  # a sweep's: each trial's objective
            row["objectives"] = group.groupby("trial_id", sort=True)["objective"].first().tolist()
        rows.append(row)
    return rows


def _cell(metric: str, values: list[float]) -> str:
    """mean ± std (the paper's statistic), then the median and every seed's value."""
    if not values:
        return "–"
    scale, unit = (100, " %") if metric == "hq" else (1, "")
    x = pd.Series(values, dtype=float) * scale
    spread = x.std() if len(x) > 1 else 0.0
    seeds = " ".join(_num(v) for v in x)
    return f"{_num(x.mean())} ± {spread:.2g}{unit}, median {_num(x.median())} [{seeds}]"


def _num(value: float) -> str:
    """Three significant digits below 100; above, every digit of the integer part and one
    more (999.6 and 1000, not 1e+03)."""
    if not math.isfinite(value) or abs(value) < 100:
        return f"{value:.3g}"
    return f"{value:.{len(str(int(abs(value)))) + 1}g}"


def format_table(rows: list[dict], published: Published) -> str:
    """Our medians with their seeds beside the paper's cells, one line per level."""
    factor, metrics = published.factor, published.metrics
    head = [factor, "seeds", "div", "coll", "drop"]
    head += [f"{m} ours: mean ± std, median [seeds]" for m in metrics]
    head += [f"{m} paper" for m in metrics] if published.rows else []
    lines = [" | ".join(head)]
    for row in rows:
        paper = published.rows.get(row[factor], ("–",) * len(metrics)) if published.rows else ()
        cells = [str(row[factor])] + [str(row[k]) for k in ("seeds", "diverged", "collapsed",
                                                            "dropping")]  # fmt: skip
        cells += [_cell(m, row[m]) for m in metrics] + list(paper)
        lines.append(" | ".join(cells))
    return "\n".join(lines)


class Verdict(NamedTuple):
    """A claim's verdict and the tests it follows from, one printed line each."""

    verdict: str  # "supported", "not supported" or "inconclusive"
    lines: tuple[str, ...]


def _effects(metric: str, x: list[float], y: list[float], shown: bool = True) -> str:
    if not shown:  # the null simulations of tests/test_reproduce.py need only the verdict
        return ""
    diff, delta = stats.median_difference(x, y), stats.cliffs_delta(x, y)
    return (f"{metric} median difference {diff.estimate:.3g} [{diff.lo:.3g}, {diff.hi:.3g}], "
            f"Cliff's δ {delta.estimate:.2f} [{delta.lo:.2f}, {delta.hi:.2f}]")  # fmt: skip


def _p(p: float) -> str:
    return f"{p:.3g}"


def packing_helps(rows: list[dict], published: Published, effects: bool = True) -> Verdict:
    """grid25_packing: every packed level captures more modes than pack 1 (one-sided
    permutation tests of the mean, Holm across the packed levels) at a similar high-quality
    share (TOST of the hq shift within ± `published.margin`, Holm). Not supported where a
    packed level captures significantly fewer modes, or has an hq significantly more than the
    margin below pack 1's (one Holm family of both); inconclusive otherwise. That the unpacked
    GAN misses modes is shown (its seeds' modes), not tested."""
    by_pack = {r["pack"]: r for r in rows}
    base, packed = by_pack[1], [r for pack, r in sorted(by_pack.items()) if pack != 1]
    if not base["modes"] or any(not r["modes"] for r in packed):
        return Verdict("inconclusive", ("a level has no seed that did not diverge",))
    more = stats.holm([stats.permutation_test(r["modes"], base["modes"]).p for r in packed])
    m = published.margin
    similar = stats.holm([stats.equivalence(r["hq"], base["hq"], m).p for r in packed])
    # one Holm family for everything that speaks against the claim
    against = stats.holm([stats.permutation_test(r["modes"], base["modes"], "less").p
                          for r in packed] +
                         [stats.permutation_test(np.add(r["hq"], m), base["hq"], "less").p
                          for r in packed])  # fmt: skip
    fewer, worse = against[: len(packed)], against[len(packed) :]
    seeds = " ".join(f"{v:g}" for v in base["modes"])
    lines = [f"pack 1 captures [{seeds}] of 25 modes (shown, not tested)"]
    for i, r in enumerate(packed):
        lines.append(f"pack {r['pack']} vs 1: modes greater p(Holm) {_p(more[i])}, fewer "
                     f"{_p(fewer[i])}; hq within ±{m:g} p(Holm) {_p(similar[i])}, worse by more "
                     f"{_p(worse[i])}; {_effects('modes', r['modes'], base['modes'], effects)}; "
                     f"{_effects('hq', r['hq'], base['hq'], effects)}")  # fmt: skip
    if (more <= ALPHA).all() and (similar <= ALPHA).all():
        return Verdict("supported", tuple(lines))
    if (fewer <= ALPHA).any() or (worse <= ALPHA).any():
        return Verdict("not supported", tuple(lines))
    return Verdict("inconclusive", tuple(lines))


def most_find_every_mode(rows: list[dict], published: Published, n_modes: int = 8) -> Verdict:
    """quickstart: more than half of the losses, each at its best rates, find every mode: a
    seed succeeds with all `n_modes` modes at hq ≥ 0.8, and a loss finds every mode when more
    than half of its seeds succeed (exact one-sided sign test, Holm across the losses). Not
    supported where so many losses significantly fail (most of their seeds do not succeed)
    that more than half cannot succeed; inconclusive otherwise."""
    wins = [sum(m >= n_modes and h >= 0.8 for m, h in zip(r["modes"], r["hq"], strict=False))
            for r in rows]  # fmt: skip
    runs = [min(len(r["modes"]), len(r["hq"])) + r["diverged"] for r in rows]  # diverged: fail
    finds = stats.holm([float(stats.sign_test(w, n)) if n else 1.0
                        for w, n in zip(wins, runs, strict=True)])  # fmt: skip
    fails = stats.holm([float(stats.sign_test(n - w, n)) if n else 1.0
                        for w, n in zip(wins, runs, strict=True)])  # fmt: skip
    lines = tuple(f"{r['loss']}: {w} of {n} seeds find every mode; most succeed p(Holm) "
                  f"{_p(finds[i])}, most fail {_p(fails[i])}"
                  for i, (r, w, n) in enumerate(zip(rows, wins, runs, strict=True)))  # fmt: skip
    if (finds <= ALPHA).sum() > len(rows) / 2:
        return Verdict("supported", lines)
    if len(rows) - (fails <= ALPHA).sum() <= len(rows) / 2:
        return Verdict("not supported", lines)
    return Verdict("inconclusive", lines)


def none_dominates(
    rows: list[dict], published: Published, metric: str = "fid", effects: bool = True
) -> Verdict:
    """digits_losses: the best loss (lowest median FID) does not dominate: it is equivalent
    within ± `published.margin` to at least one other loss (TOST on the median difference, Holm
    across the others). Not supported where every other loss is significantly worse than the
    best (one-sided permutation tests, Holm, at α / levels for having picked the best of them);
    inconclusive otherwise. A loss whose seeds all diverged has no values and is left out."""
    ranked = sorted((r for r in rows if r[metric]), key=lambda r: _median(r[metric]))
    if len(ranked) < 2:
        return Verdict("inconclusive", ("fewer than two losses have values",))
    best, others = ranked[0], ranked[1:]
    m = published.margin
    similar = stats.holm([stats.equivalence(best[metric], r[metric], m).p for r in others])
    better = stats.holm([stats.permutation_test(best[metric], r[metric], "less").p
                         for r in others])  # fmt: skip
    lines = tuple(f"best {best['loss']} vs {r['loss']}: {metric} within ±{m:g} p(Holm) "
                  f"{_p(similar[i])}, best lower p(Holm) {_p(better[i])}; "
                  f"{_effects(metric, best[metric], r[metric], effects)}"
                  for i, r in enumerate(others))  # fmt: skip
    if (similar <= ALPHA).any():
        return Verdict("supported", lines)
    if (better <= ALPHA / len(ranked)).all():
        return Verdict("not supported", lines)
    return Verdict("inconclusive", lines)


def r3gan_covers_more(rows: list[dict], published: Published, effects: bool = True) -> Verdict:
    """r3gan_modes, r3gan_stacked: RpGAN + R1 + R2 covers more modes than non-saturating + R1
    (one-sided permutation test of the mean modes over seeds, a diverged seed counting 0: it
    covers none) and more stably: fewer of its seeds fail, by diverging, collapsing or dropping
    half the modes (one-sided permutation test of the 0/1 failures: Fisher's exact test); Holm
    over the two. Not supported where it covers significantly fewer modes or fails significantly
    more often (one Holm family); inconclusive otherwise. The loss's and R2's own parts (rpgan +
    r1, and non-saturating + r1+r2, each against the baseline) are shown with intervals, not
    tested."""
    by_cell = {r[published.factor]: r for r in rows}
    if R3GAN not in by_cell or BASELINE not in by_cell:
        return Verdict("inconclusive", (f"the grid lacks {R3GAN} or {BASELINE}",))
    r3, base = by_cell[R3GAN], by_cell[BASELINE]
    modes = _cell_modes(rows, published.factor)
    fails = {cell: [1.0] * r["failed"] + [0.0] * (r["seeds"] - r["failed"])
             for cell, r in by_cell.items()}  # fmt: skip

    def holm(more_modes: str, fewer_fails: str) -> np.ndarray:
        tests = ((modes, more_modes), (fails, fewer_fails))
        return stats.holm([stats.permutation_test(x[R3GAN], x[BASELINE], alternative).p
                           for x, alternative in tests])  # fmt: skip

    better, worse = holm("greater", "less"), holm("less", "greater")
    lines = [f"{R3GAN} vs {BASELINE}: modes greater p(Holm) {_p(better[0])}, fewer "
             f"{_p(worse[0])}; {_effects('modes', modes[R3GAN], modes[BASELINE], effects)}",
             f"failed seeds {r3['failed']} of {r3['seeds']} against {base['failed']} of "
             f"{base['seeds']}: fewer p(Holm) {_p(better[1])}, more {_p(worse[1])}"]  # fmt: skip
    for cell in sorted(set(by_cell) - {R3GAN, BASELINE}):
        lines.append(f"{cell} vs {BASELINE} (shown, not tested): "
                     f"{_effects('modes', modes[cell], modes[BASELINE], effects)}")  # fmt: skip
    if (better <= ALPHA).all():
        return Verdict("supported", tuple(lines))
    if (worse <= ALPHA).any():
        return Verdict("not supported", tuple(lines))
    return Verdict("inconclusive", tuple(lines))


def _cell_modes(rows: list[dict], factor: str) -> dict[str, list[float]]:
    """Each cell's modes over its seeds, a diverged seed counting 0 (it covers none)."""
    return {r[factor]: r["modes"] + [0.0] * r["diverged"] for r in rows}


def r3gan_power(rows: list[dict], published: Published) -> list[str]:
    """Seeds per cell that detect `published.effect` more modes at α / 2 (Holm's first step),
    and whether the baseline leaves room for such a gain below `published.ceiling`."""
    modes = _cell_modes(rows, published.factor)
    alpha = ALPHA / 2
    found = stats.power(stats.residuals(list(modes.values())), published.effect,
                        stats.shift_rejects(alpha), alpha)  # fmt: skip
    lines = [found.line(f"a gain of {published.effect:g} mode(s)")]
    base = _mean(modes.get(BASELINE, []))
    if base + published.effect > published.ceiling:
        lines.append(f"ceiling: {BASELINE} covers {_num(base)} of {published.ceiling:g} modes on "
                     f"average, so a gain of {published.effect:g} cannot occur at this setting "
                     "(the simulated power shifts values past what can be counted)")  # fmt: skip
    return lines


def pbt_beats_fixed(rows: list[dict], published: Published, effects: bool = True) -> Verdict:
    """pbt_ring8: PBT's trials end with a higher objective than the fixed arm's (one-
    sided permutation test of the mean over trials, each trial's robust objective over its
    seeds at its last step). Not supported where they end significantly lower; inconclusive
    otherwise. PBT's trials are not independent (the worst clone the best), which makes its
    spread smaller and the test somewhat liberal: a caveat the verdict's line states."""
    by_arm = {r[published.factor]: r for r in rows}
    if set(by_arm) != {"pbt", "fixed"}:
        return Verdict("inconclusive", ("both arms are needed: pbt and fixed",))
    x, y = by_arm["pbt"]["objectives"], by_arm["fixed"]["objectives"]
    higher = stats.permutation_test(x, y).p
    lower = stats.permutation_test(x, y, "less").p
    best = f"best trial {max(x):.3g} against {max(y):.3g}"
    lines = (f"pbt vs fixed, {len(x)} against {len(y)} trials: objective higher p {_p(higher)}, "
             f"lower {_p(lower)}; {_effects('objective', x, y, effects)}; {best}; PBT's trials "
             "share weights through exploits (not independent)",)  # fmt: skip
    if higher <= ALPHA:
        return Verdict("supported", lines)
    if lower <= ALPHA:
        return Verdict("not supported", lines)
    return Verdict("inconclusive", lines)


def pbt_power(rows: list[dict], published: Published) -> list[str]:
    """Trials per arm that detect `published.effect` higher objective at α."""
    found = stats.power(stats.residuals([r["objectives"] for r in rows]), published.effect,
                        stats.shift_rejects(ALPHA), ALPHA)  # fmt: skip
    return [found.line(f"an objective {published.effect:g} higher", unit="trials")]


def packing_power(rows: list[dict], published: Published) -> list[str]:
    """Seeds per pack size that detect `published.effect` more modes (at α / packed levels,
    Holm's first step) and show hq equivalence within the margin when hq does not differ."""
    packed = len(rows) - 1
    alpha = ALPHA / packed
    modes = stats.power(stats.residuals([r["modes"] for r in rows]), published.effect,
                        stats.shift_rejects(alpha), alpha)  # fmt: skip
    hq = stats.power(stats.residuals([r["hq"] for r in rows]), 0.0,
                     stats.equivalence_rejects(alpha, published.margin), alpha)  # fmt: skip
    same = f"hq equivalence within ±{published.margin:g} (no true difference)"
    return [modes.line(f"a gain of {published.effect:g} mode(s)"), hq.line(same)]


def finding_power(rows: list[dict], published: Published) -> list[str]:
    """Seeds per loss at which a loss whose seeds succeed with probability `published.effect`
    passes the sign test (at α / losses)."""
    alpha = ALPHA / len(rows)
    line = stats.sign_power(published.effect, alpha).line(
        f"a loss whose seeds find every mode {published.effect:.0%} of the time"
    )
    return [line]


def dominance_power(rows: list[dict], published: Published, metric: str = "fid") -> list[str]:
    """Seeds per loss that show equivalence within the margin of two losses that do not
    differ (at α / (losses − 1), Holm's first step), and detect a best loss `effect` lower
    than another (at the Bonferroni bound of the dominance test's Holm steps)."""
    groups = [r[metric] for r in rows if r[metric]]
    alpha = ALPHA / max(len(groups) - 1, 1)
    spread = stats.residuals(groups)
    same = stats.power(spread, 0.0, stats.equivalence_rejects(alpha, published.margin), alpha)
    strict = ALPHA / len(groups) / max(len(groups) - 1, 1)  # every other loss, best picked
    apart = stats.power(spread, -published.effect, stats.shift_rejects(strict, "less"), strict)
    return [same.line(f"{metric} equivalence within ±{published.margin:g} (no true difference)"),
            apart.line(f"a {metric} {published.effect:g} lower")]  # fmt: skip


class Check(NamedTuple):
    verdict: Callable[[list[dict], Published], Verdict]
    power: Callable[[list[dict], Published], list[str]]


CHECKS: dict[str, Check] = {
    "grid25_packing": Check(packing_helps, packing_power),
    "quickstart": Check(most_find_every_mode, finding_power),
    "digits_losses": Check(none_dominates, dominance_power),
    "r3gan_modes": Check(r3gan_covers_more, r3gan_power),
    "r3gan_stacked": Check(r3gan_covers_more, r3gan_power),
    "pbt_ring8": Check(pbt_beats_fixed, pbt_power),
}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _median(values: list[float]) -> float:
    return float(pd.Series(values, dtype=float).median()) if values else math.nan


def confirmation_seeds(asked: int | None, smoke: bool, published: Published, seeds: int) -> int:
    """The fresh seeds each level's best retrains on: `--confirm-seeds` where given, else 2 at
    `--smoke`, else the recipe's `confirm_seeds`, else its own number of `seeds`."""
    return asked or (2 if smoke else published.confirm_seeds or seeds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(PUBLISHED), help="a file of sweeps/ by name")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the plumbing")
    parser.add_argument("--workers", type=int, default=2, help="configurations at once (grid)")
    parser.add_argument("--storage", type=Path, default=Path("runs"), help="searched recipes")
    parser.add_argument("--file", type=Path, help="a variant of the recipe's sweep file")
    parser.add_argument("--confirm-seeds", type=int, help="fresh seeds the best of each level "
                        "is retrained on (searched recipes; default: the recipe's "
                        "`confirm_seeds`, 2 at --smoke)")  # fmt: skip
    args = parser.parse_args(argv)
    from ganlab import spec

    path = args.file or ROOT / "sweeps" / f"{args.recipe}.yaml"
    recipe = spec.load(path, smoke=args.smoke)
    published = PUBLISHED[args.recipe]
    start = time.perf_counter()
    if recipe.search_alg == "grid":
        frame = run_grid(recipe, args.workers)
    elif published.arms:
        frame = run_arms(path, published, args.smoke, args.storage)
    else:
        fresh = confirmation_seeds(args.confirm_seeds, args.smoke, published, len(recipe.seeds))
        searched = run_levels(path, published, args.smoke, args.storage, fresh)
        frame = best_per_level(searched, published.factor)
        print(f"each level's best, retrained on {fresh} fresh seeds (`ganlab confirm`): the "
              "tests below stand on those seeds, not on the ones it was picked on")  # fmt: skip
    wall = time.perf_counter() - start
    if published.fields:
        frame[published.factor] = level_column(frame, published)
    rows = group_rows(frame, published.factor, published.metrics)
    print(f"{args.recipe}{' (smoke)' if args.smoke else ''}: {len(frame)} seed runs, "
          f"{wall:.0f} s wall on {args.workers} workers")  # fmt: skip
    print(f"published: {published.source}")
    print(f"claim: {published.claim}")
    print(format_table(rows, published))
    check = CHECKS[args.recipe]
    verdict = check.verdict(rows, published)
    print(f"tests (pre-registered, α {ALPHA}; p-values after Holm across levels):")
    for line in (*verdict.lines, *check.power(rows, published)):
        print(f"  {line}")
    print(f"verdict: {verdict.verdict}{' (smoke sizes: plumbing only)' if args.smoke else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
