"""Run a recipe of `sweeps/` and print our numbers beside the published table it reproduces.

    python benchmarks/reproduce.py grid25_packing              # the shipped budget
    python benchmarks/reproduce.py grid25_packing --smoke      # tiny sizes, seconds
    python benchmarks/reproduce.py quickstart --workers 2

A grid recipe (`search_alg: grid`) runs here, one process per configuration (at most
`--workers` at once, one thread each), each training the recipe's seeds with `ganlab.trial`;
nothing of Ray. A searched recipe runs as `ganlab sweep` into `--storage` and is read back from
its tables, keeping each level's best configuration (tuned, as the papers compare). Either way
the result is one row per (configuration, seed), grouped by the recipe's factor: each group
shows the median and the per-seed values of every compared metric, so the seeds behind each
number are in plain view, beside the paper's mean ± std.
"""

import argparse
import itertools
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


class Published(NamedTuple):
    """A published table: where it is from and its rows, keyed by the factor's level."""

    source: str
    factor: str  # the sweep field the table varies
    metrics: tuple[str, ...]  # ganlab metric names the table reports, in its column order
    rows: dict[Any, tuple[str, ...]]  # level -> the paper's cells, as printed there
    claim: str  # the direction a reproduction must show
    per_level: int = 0  # searched recipes: configurations each level's own search samples


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
    ),
    "quickstart": Published(
        "PacGAN (Lin et al. 2018), Table 1, 2D-ring, vanilla GAN (their MLP, pack 1); "
        "Lucic et al. 2018: no loss dominates once its rates are tuned",
        "loss",
        ("modes", "hq", "kl_modes"),
        {"non-saturating": ("6.3 ± 0.5", "98.2 ± 0.2 %", "0.45 ± 0.09")},
        "with tuned rates most losses capture all 8 modes at a high high-quality share",
        per_level=6,
    ),
    "digits_losses": Published(
        "Lucic et al. 2018 (Are GANs created equal?): the best FID per loss after a tuned "
        "search lies within the spread of the others",
        "loss",
        ("fid", "modes", "hq"),
        {},
        "no loss dominates once tuned: the best configurations' intervals overlap",
        per_level=8,
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
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = [row for result in pool.map(run_point, configs) for row in result]
    return pd.DataFrame(rows)


def run_sweep(path: Path, smoke: bool, storage: Path) -> pd.DataFrame:
    """`ganlab sweep` the recipe into `storage` and read its trials table back."""
    from ganlab import results, spec

    command = [sys.executable, "-m", "ganlab.cli", "sweep", str(path), "--storage", str(storage)]
    subprocess.run(command + (["--smoke"] if smoke else []), check=True)
    name = spec.load(path, smoke=smoke).name + ("-smoke" if smoke else "")
    trials, _ = results.load(storage / name)
    return trials


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


def run_levels(path: Path, published: Published, smoke: bool, storage: Path) -> pd.DataFrame:
    """One sweep per level of the recipe's factor (`level_sweep`), their trials tables joined."""
    import yaml

    from ganlab.spec import read_file

    raw = read_file(path)
    storage.mkdir(parents=True, exist_ok=True)
    frames = []
    for level in raw["search"][published.factor]["choice"]:
        variant = storage / f"{raw['name']}-{published.factor}-{level}.yaml"
        variant_raw = level_sweep(raw, published.factor, level, published.per_level)
        text = yaml.safe_dump(variant_raw, sort_keys=False)
        variant.write_text(f"# {path.name}, {published.factor}: {level} (reproduce.py)\n{text}")
        frames.append(run_sweep(variant, smoke, storage))
    return pd.concat(frames, ignore_index=True)


# --- comparing -----------------------------------------------------------------------------------


def best_per_level(frame: pd.DataFrame, factor: str, mode: str) -> pd.DataFrame:
    """A searched recipe's seed rows of each level's best configuration (by the robust
    objective): what "once tuned" means in the published claims."""
    per_config = frame.drop_duplicates("config_id").dropna(subset=["objective"])
    ranked = per_config.sort_values("objective", ascending=mode == "min")
    best = ranked.drop_duplicates(factor)["config_id"]
    return frame[frame["config_id"].isin(best)]


def group_rows(frame: pd.DataFrame, factor: str, metrics: tuple[str, ...]) -> list[dict]:
    """Per level of `factor`: seeds, diverged and collapsed counts, and each metric's median
    and per-seed values over the seeds that did not diverge."""
    rows = []
    for level, group in frame.groupby(factor, sort=True):
        alive = group[group["status"] != "diverged"]
        row = {factor: level, "seeds": len(group),
               "diverged": int((group["status"] == "diverged").sum()),
               "collapsed": int((group["status"] == "collapsed").sum())}  # fmt: skip
        for m in metrics:
            values = alive[f"final_{m}"].dropna().tolist()
            row[m] = values
        rows.append(row)
    return rows


def _cell(metric: str, values: list[float]) -> str:
    """mean ± std (the paper's statistic), then the median and every seed's value."""
    if not values:
        return "–"
    scale, unit = (100, " %") if metric == "hq" else (1, "")
    x = pd.Series(values, dtype=float) * scale
    spread = x.std() if len(x) > 1 else 0.0
    seeds = " ".join(f"{v:.3g}" for v in x)
    return f"{x.mean():.3g} ± {spread:.2g}{unit}, median {x.median():.3g} [{seeds}]"


def format_table(rows: list[dict], published: Published) -> str:
    """Our medians with their seeds beside the paper's cells, one line per level."""
    factor, metrics = published.factor, published.metrics
    head = [factor, "seeds", "div", "coll"]
    head += [f"{m} ours: mean ± std, median [seeds]" for m in metrics]
    head += [f"{m} paper" for m in metrics] if published.rows else []
    lines = [" | ".join(head)]
    for row in rows:
        paper = published.rows.get(row[factor], ("–",) * len(metrics)) if published.rows else ()
        cells = [str(row[factor]), str(row["seeds"]), str(row["diverged"]), str(row["collapsed"])]
        cells += [_cell(m, row[m]) for m in metrics] + list(paper)
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def packing_helps(rows: list[dict]) -> bool:
    """grid25_packing: every packed level captures more modes than the unpacked one, by the
    mean over seeds (the paper's statistic) and by the median (robust to one lucky seed), and
    the unpacked GAN keeps at least 80 % high-quality samples."""
    by_pack = {r["pack"]: r for r in rows}
    base = by_pack[1]["modes"]
    packed = [r["modes"] for pack, r in by_pack.items() if pack != 1]
    more = all(_mean(m) > _mean(base) and _median(m) > _median(base) for m in packed)
    return more and _mean(by_pack[1]["hq"]) >= 0.8


def most_find_every_mode(rows: list[dict], n_modes: int = 8) -> bool:
    """quickstart: more than half of the losses, each at its best rates, capture every mode by
    the median over seeds, with at least 80 % high-quality samples by the median."""
    full = [len(r["modes"]) > 0 and _median(r["modes"]) >= n_modes and _median(r["hq"]) >= 0.8
            for r in rows]  # fmt: skip
    return sum(full) > len(rows) / 2


def none_dominates(rows: list[dict], metric: str = "fid") -> bool:
    """digits_losses: the best loss (lowest median FID of its best configuration) does not
    dominate: its seeds' range overlaps the runner-up's. A loss whose seeds all diverged has
    no values and cannot be the runner-up."""
    ranked = sorted((r for r in rows if r[metric]), key=lambda r: _median(r[metric]))
    if len(ranked) < 2:
        return False
    best, second = ranked[0][metric], ranked[1][metric]
    return max(best) >= min(second)


CHECKS: dict[str, Callable[[list[dict]], bool]] = {
    "grid25_packing": packing_helps,
    "quickstart": most_find_every_mode,
    "digits_losses": none_dominates,
}


def _median(values: list[float]) -> float:
    return float(pd.Series(values, dtype=float).median()) if values else math.nan


def _mean(values: list[float]) -> float:
    return float(pd.Series(values, dtype=float).mean()) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(PUBLISHED), help="a file of sweeps/ by name")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the plumbing")
    parser.add_argument("--workers", type=int, default=2, help="configurations at once (grid)")
    parser.add_argument("--storage", type=Path, default=Path("runs"), help="searched recipes")
    parser.add_argument("--file", type=Path, help="a variant of the recipe's sweep file")
    args = parser.parse_args(argv)
    from ganlab import spec

    path = args.file or ROOT / "sweeps" / f"{args.recipe}.yaml"
    recipe = spec.load(path, smoke=args.smoke)
    published = PUBLISHED[args.recipe]
    start = time.perf_counter()
    if recipe.search_alg == "grid":
        frame = run_grid(recipe, args.workers)
    else:
        frame = best_per_level(
            run_levels(path, published, args.smoke, args.storage), published.factor, recipe.mode
        )
    wall = time.perf_counter() - start
    rows = group_rows(frame, published.factor, published.metrics)
    print(f"{args.recipe}{' (smoke)' if args.smoke else ''}: {len(frame)} seed runs, "
          f"{wall:.0f} s wall on {args.workers} workers")  # fmt: skip
    print(f"published: {published.source}")
    print(f"claim: {published.claim}")
    print(format_table(rows, published))
    holds = CHECKS[args.recipe](rows) if not args.smoke else None
    if holds is not None:
        print(f"direction reproduced: {'yes' if holds else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
