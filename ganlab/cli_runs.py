"""`ganlab status`, `ganlab ls`, `ganlab export`, and the columns `ganlab results` shows: the
command line's face over `ganlab.runs` (what a run directory says) and the results tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ganlab import rundir
from ganlab.spec import BadInput

if TYPE_CHECKING:
    import pandas as pd

BLANK = "—"  # a field that does not apply, or a number not measured
SEED_COLUMNS = ("trial_id", "seed", "status", "steps_done", "diverged_step", "objective")


class ColumnError(BadInput):
    """`--columns` names a column the table does not have."""


def add_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="a sweep's state: trials done, running, "
        "pruned and failed, the best so far, the time left",
    )
    status.add_argument("run_dir", type=Path)
    status.set_defaults(command=_status, name="status")

    listing = commands.add_parser("ls", help="the runs of a storage: size, state, best objective")
    listing.add_argument(
        "storage",
        type=Path,
        nargs="?",
        default=Path(rundir.RUNS),
        help=f"a directory of run directories (default {rundir.RUNS})",
    )
    listing.set_defaults(command=_ls, name="ls")

    export = commands.add_parser(
        "export",
        help="write a trial's configuration as a YAML file "
        "for `ganlab trial --config` or a sweep file's `base:`",
    )
    export.add_argument("run_dir", type=Path)
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", metavar="ID", help="the trial (its `trial_id`)")
    which.add_argument("--best", action="store_true", help="the best configuration's trial")
    which.add_argument("--top", type=int, metavar="N", help="the N best, one file each in --out")
    export.add_argument(
        "--out", type=Path, help="the file (with --top: the directory) to write; default: print it"
    )
    export.set_defaults(command=_export, name="export")


# --- ganlab results' columns ---------------------------------------------------------------


def searched_fields(run_dir: Path, trials: pd.DataFrame) -> list[str]:
    """The fields the sweep searched (its `sweep.json`); without one, those that vary."""
    from ganlab import results, runs

    searched = runs.searched_fields(run_dir)
    if searched is None:
        columns = results.config_columns(trials)
        return [c for c in columns if trials[c].nunique(dropna=False) > 1]
    return [name for name in searched if name in trials.columns]


def with_fields(table: pd.DataFrame, trials: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """`table` (one row per trial or per seed) with each configuration field it lacks, from the
    trial's rows; `results.summarise` shows only those that vary."""
    from ganlab import results

    missing = [c for c in results.config_columns(trials) if c not in table.columns]
    if not missing or table.empty:
        return table
    per_trial = trials.groupby("trial_id", sort=False)[missing].first()
    return table.join(per_trial, on="trial_id")


def seed_rows(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per seed, best first: configurations in the summary's order (its ranking), each
    configuration's seeds by their final objective metric."""
    if trials.empty:
        return trials
    metric = trials["metric"].iloc[0]
    order = {trial_id: rank for rank, trial_id in enumerate(summary["trial_id"])}
    ascending = trials["mode"].iloc[0] == "min"
    final = trials[f"final_{metric}"] if f"final_{metric}" in trials.columns else trials["seed"]
    ranked = trials.assign(
        _rank=trials["trial_id"].map(order).fillna(len(order)),
        _final=final if ascending else -final,
    )
    ranked = ranked.sort_values(["_rank", "_final", "seed"], na_position="last", kind="stable")
    return ranked.drop(columns=["_rank", "_final"]).reset_index(drop=True)


def default_columns(
    table: pd.DataFrame, searched: list[str], per_seed: bool, summary: list[str]
) -> list[str]:
    """A readable set: per configuration, `results.summarise`'s own columns (`summary`) with
    the searched fields after the trial id; per seed, the ids, the searched fields, status and
    steps, the objective and the seed's final objective metric."""
    if per_seed:
        metric = table["metric"].iloc[0] if len(table) and "metric" in table.columns else "fid"
        wanted = [*SEED_COLUMNS[:2], *searched, *SEED_COLUMNS[2:], f"final_{metric}"]
    else:
        wanted = [*summary[:1], *searched, *summary[1:]]
    return [c for c in dict.fromkeys(wanted) if c in table.columns]


def columns(table: pd.DataFrame, asked: str | None, default: list[str]) -> list[str]:
    """`--columns`: `a,b,c` (refused, naming them, where the table lacks some), `all`, or
    the default set."""
    if asked is None:
        return default
    if asked.strip() == "all":
        return list(table.columns)
    names = [name.strip() for name in asked.split(",") if name.strip()]
    unknown = [name for name in names if name not in table.columns]
    if unknown or not names:
        raise ColumnError(
            f"--columns {asked!r}: no column {', '.join(unknown) or '(none given)'}"
            f"; the table's columns: {', '.join(table.columns)}"
        )
    return names


def render(table: pd.DataFrame) -> str:
    """The rows as text, blanks as `—`, every column shown."""
    import pandas as pd

    if table.empty:
        return "(no rows)"
    with pd.option_context(
        "display.max_columns", None, "display.width", 250, "display.max_colwidth", 60
    ):
        return table.to_string(index=False, na_rep=BLANK)


# --- ganlab status ------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from ganlab import runs

    print(format_status(runs.status(args.run_dir)))
    return 0


def format_status(found: Any) -> str:
    """`ganlab status`'s text of a `runs.RunStatus`."""
    counts = found.outcomes
    planned = found.planned if found.planned is not None else "?"
    not_started = max(0, found.planned - found.ended - counts["running"]) if found.planned else 0
    lines = [
        f"{found.name}: {found.state}" + (f" ({found.holder})" if found.holder else ""),
        f"trials: {found.ended} of {planned} ended ({counts['completed']} completed, "
        f"{counts['pruned']} pruned, {counts['error']} failed), {counts['running']} running"
        + (f", {not_started} not started" if not_started else ""),
    ]
    if found.elapsed_s is not None:
        left = f", about {_duration(found.left_s)} left" if found.left_s is not None else ""
        lines.append(f"elapsed: {_duration(found.elapsed_s)}{left}")
    if found.ranking_problem:
        lines.append(f"best so far: none ({found.ranking_problem})")
    elif found.best is not None:
        best = found.best
        step = found.best_seeds["steps_done"].max()
        lines.append(
            f"best so far ({found.metric}, {found.mode}): trial {best['trial_id']}, "
            f"objective {best['objective']:.6g} at step {step}, {best['statuses']}"
        )
        lines.append(render(found.best_seeds))
    if found.state == "running":
        lines.append("(best and times as of the sweep's last collection of the tables)")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


# --- ganlab ls ------------------------------------------------------------------------------


def _ls(args: argparse.Namespace) -> int:
    import pandas as pd

    from ganlab import runs

    entries = runs.list_runs(args.storage)
    if not entries:
        print(f"{args.storage}: no runs")
        return 0
    rows = pd.DataFrame(
        {
            "run": [e.path.name for e in entries],
            "state": [e.state for e in entries],
            "trials": [e.trials for e in entries],
            "size": [_size(e.size) for e in entries],
            "objective": [e.metric for e in entries],
            "best": [e.best for e in entries],
        }
    )
    print(render(rows))
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# --- ganlab export ------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from ganlab import runs

    if args.top is not None:
        return _export_many(args)
    trial_id = args.trial or runs.ranked_trials(args.run_dir)[0]
    text = export_text(runs.export(args.run_dir, trial_id), args.run_dir)
    if args.out is None:
        sys.stdout.write(text)
    else:
        rundir.atomic_write_text(args.out, text)
        print(f"wrote {args.out}: `ganlab trial --config {args.out}` reruns trial {trial_id}")
    return 0


def _export_many(args: argparse.Namespace) -> int:
    from ganlab import runs

    if args.out is None or args.top < 1:
        raise ColumnError("--top N needs N >= 1 and --out DIRECTORY (one file per trial)")
    ranked = runs.ranked_trials(args.run_dir)[: args.top]
    for number, trial_id in enumerate(ranked, start=1):
        path = args.out / f"rank-{number:02d}-{trial_id}.yaml"
        rundir.atomic_write_text(
            path, export_text(runs.export(args.run_dir, trial_id), args.run_dir)
        )
        print(f"[{number}/{len(ranked)}] {path}", flush=True)
    return 0


def export_text(found: Any, run_dir: Path) -> str:
    """A trial's configuration as YAML: the fields a sweep file's `base:` takes (and `ganlab
    trial --config`), its seeds and objective in the header, with the command that reruns it."""
    seeds = ",".join(str(s) for s in found.seeds)
    objective = "—" if found.objective is None else f"{found.objective:.6g}"
    header = [
        f"# ganlab export of trial {found.trial_id} (config {found.config_id}) of {run_dir}:",
        f"# {found.status}, objective {found.metric} ({found.mode}) {objective}, seeds {seeds}.",
        f"# Rerun: ganlab trial --config FILE --seeds {seeds} --metric {found.metric} --mode "
        f"{found.mode}",
        "# Search around it: these fields under a sweep file's `base:`; its seeds and objective",
        f"# go at the file's top level (seeds: [{', '.join(map(str, found.seeds))}], "
        f"objective: {{metric: {found.metric}, mode: {found.mode}}}).",
    ]
    body = yaml.safe_dump(found.fields, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body
