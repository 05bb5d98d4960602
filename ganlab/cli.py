"""`ganlab`: the command line, a thin face over trial, sweep, results and analysis.

Bad input (a config or sweep file that cannot run, a flag that cannot apply) exits with code 2
before any work starts, naming the file and the field; nothing is written. Anything else is not
the user's input: its traceback is shown and the exit code is 1.
"""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from ganlab import __version__, budget, cli_runs
from ganlab.config import ConfigError, TrialConfig
from ganlab.reports import EvalReport
from ganlab.rundir import COMPARISON, JOURNAL, METRICS_TABLE, REPORT, TRIALS
from ganlab.spec import BadInput, read_file
from ganlab.yamlfile import YamlError, read_yaml

EXIT_BAD_INPUT = 2


class UsageError(BadInput):
    """A command line that cannot run as given."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except BadInput as error:
        print(f"ganlab {args.name}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


class FieldHelp(argparse.HelpFormatter):
    """`ganlab trial --help`: each field's meaning, default, allowed values and unit, from
    `ganlab.fieldhelp` (the README's source too), looked up only when help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest.startswith("field_"):
            from ganlab.fieldhelp import flag_help

            return flag_help(action.dest.removeprefix("field_")).replace("%", "%%")
        return action.help


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ganlab {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    trial = commands.add_parser("trial", help="train one configuration over its seeds",
                                formatter_class=FieldHelp)  # fmt: skip
    trial.add_argument("--config", type=Path, help="a YAML file of trial fields (`ganlab "
                       "export` writes one)")  # fmt: skip
    trial.add_argument("--imports", help="plugins to import first, comma-separated: files "
                       "(my_gans.py) or module names")  # fmt: skip
    for f in dataclasses.fields(TrialConfig):
        trial.add_argument(f"--{f.name.replace('_', '-')}", dest=f"field_{f.name}",
                           metavar=f.name.upper(), help=f"trial field `{f.name}`")  # fmt: skip
    trial.set_defaults(command=_trial, name="trial")

    sweep = commands.add_parser("sweep", help="run a sweep file on Ray Tune with Optuna")
    sweep.add_argument("file", type=Path)
    sweep.add_argument("--address", help="join a running Ray cluster (e.g. `auto`)")
    sweep.add_argument("--num-samples", type=int, help="override the file's num_samples")
    sweep.add_argument("--smoke", action="store_true", help="tiny sizes, for CI and trying")
    sweep.add_argument("--resume", action="store_true", help="continue a stopped sweep")
    sweep.add_argument("--allow-changed-plugins", action="store_true", help="with --resume: go "
                       "on with plugins (`imports:`) whose code changed")  # fmt: skip
    sweep.add_argument("--data-dir", help="override base.data_dir")
    sweep.add_argument("--storage", help="override the file's storage")
    sweep.add_argument("--no-report", action="store_true", help=f"skip {REPORT} at the end")
    sweep.set_defaults(command=_sweep, name="sweep")

    show = commands.add_parser("results", help="print a run's results table")
    show.add_argument("run_dir", type=_run_location, help="a run directory or an s3:// run")
    show.add_argument("--where", help="a pandas query, e.g. \"loss == 'hinge' and lr_d < 1e-3\"")
    show.add_argument("--top", type=int, default=10, help="rows to show (best first)")
    show.add_argument("--seeds", action="store_true", help="one row per seed, not per config")
    show.add_argument("--columns", help="the columns to show, `a,b,c`, or `all` (default: the "
                      "searched fields, status, steps and the objective)")  # fmt: skip
    show.set_defaults(command=_results, name="results")

    confirm = commands.add_parser("confirm", help="retrain a run's best configurations on "
                                  "fresh seeds, into its tables (`phase` confirm)")  # fmt: skip
    confirm.add_argument("run_dir", type=Path)
    confirm.add_argument("--top", type=int, default=3, help="configurations to retrain, best "
                         "first (default 3)")  # fmt: skip
    confirm.add_argument("--seeds", type=int, default=5, help="fresh seeds for each, numbered "
                         "after the search's (default 5)")  # fmt: skip
    confirm.add_argument("--address", help="join a running Ray cluster (e.g. `auto`)")
    confirm.add_argument("--resume", action="store_true", help="continue a stopped confirmation")
    confirm.add_argument("--no-report", action="store_true", help=f"skip {REPORT} at the end")
    confirm.set_defaults(command=_confirm, name="confirm")

    report = commands.add_parser("report", help=f"write RUN_DIR/{REPORT}")
    report.add_argument("run_dir", type=_run_location, help="a run directory or an s3:// run")
    report.add_argument("--compare", type=_run_location, metavar="RUN_B",
                        help="compare with another run")  # fmt: skip
    report.add_argument("--out", type=Path, help=f"where to write (default RUN_DIR/{REPORT})")
    report.set_defaults(command=_report, name="report")
    cli_runs.add_commands(commands)
    return parser


# --- ganlab trial -------------------------------------------------------------------------------


def _trial(args: argparse.Namespace) -> int:
    from ganlab.trial import Trial

    if args.imports:
        from ganlab import plugins

        try:
            plugins.load([e.strip() for e in args.imports.split(",")], Path.cwd(), "--imports")
        except ValueError as error:  # a plugin that fails to import says where
            raise UsageError(f"--imports: {error}") from None
    values: dict[str, Any] = {}
    if args.config:
        values = read_file(args.config)
        if not isinstance(values, dict):
            raise UsageError(f"{args.config}: must be a mapping of trial fields")
    for f in dataclasses.fields(TrialConfig):
        text = getattr(args, f"field_{f.name}")
        if text is not None:
            values[f.name] = _parse_flag(f.name, text)
    _default_objective(values)
    try:
        config = TrialConfig.from_dict(values)
    except ConfigError as error:
        where = f"{args.config}: " if args.config else ""
        raise UsageError(f"{where}{error.field}: {error.message}") from None
    problem = budget.check_trial(config)  # before anything is allocated
    if problem is not None:
        where = f"{args.config}: " if args.config else ""
        raise UsageError(f"{where}{problem.field}: {problem.message}")
    print(f"trial: {config.dataset} / {config.arch} / {config.loss} / {config.penalty}, "
          f"seeds {list(config.seeds)}, {config.steps} steps, objective {config.metric} "
          f"({config.mode})")  # fmt: skip
    try:
        trial = Trial(config, report=_print_progress)
    except FileNotFoundError as error:  # the data set is not where `data_dir` says
        raise UsageError(str(error)) from None
    trial.run()
    print(format_seed_summary(trial.history, config.metric, config.steps))
    return 0


def _parse_flag(name: str, text: str) -> Any:
    """Flag text as YAML would read it: numbers, booleans, null, and comma lists for seeds (one
    number is a list of one: `--seeds 5`)."""
    try:
        value = read_yaml(text)
        if isinstance(value, str) and "," in value:
            return [read_yaml(part) for part in value.split(",")]
    except (YamlError, yaml.YAMLError) as error:
        problem = error.message if isinstance(error, YamlError) else str(error)
        raise UsageError(f"--{name.replace('_', '-')} {text!r}: {problem}") from None
    if name == "seeds" and isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


def _default_objective(values: dict[str, Any]) -> None:
    """No metric given: the data set's own (`objective.default_metric`); a metric without a
    mode: the metric's own direction."""
    from ganlab.data import DATASETS
    from ganlab.metrics import METRICS
    from ganlab.objective import default_metric

    dataset = values.get("dataset", TrialConfig.dataset)
    if "metric" not in values and "mode" not in values and dataset in DATASETS:
        values["metric"] = default_metric(dataset)
    if "mode" not in values and values.get("metric") in METRICS:
        values["mode"] = METRICS[values["metric"]].mode


def _print_progress(report: EvalReport) -> None:
    alive = sum(not s.diverged for s in report.seeds.values())
    print(f"step {report.step:>7}  objective {report.objective:<12.6g} "
          f"seeds alive {alive}/{len(report.seeds)}  {report.samples_per_s:,.0f} samples/s  "
          f"{report.wall_s:.1f}s", flush=True)  # fmt: skip


SUMMARY_METRICS = (
    "fid",
    "kid",
    "good_modes",
    "modes",
    "hq",
    "kl_modes",
    "precision",
    "recall",
    "is",
)


def format_seed_summary(history: list[EvalReport], metric: str, steps: int) -> str:
    """One line per seed: its status (the tables' rule, `collect.seed_status`) and its final
    metrics."""
    from ganlab.collect import seed_status

    last = history[-1]
    shown = [m for m in SUMMARY_METRICS if any(m in s.metrics for s in last.seeds.values())]
    lines = ["", f"{'seed':>6}  {'status':<10} {'step':>7}  " + "".join(f"{m:>11}" for m in shown)]
    for seed, values in last.seeds.items():
        status = seed_status(values, last, False, steps)
        step = values.diverged_step if values.diverged else last.step
        measured = values.metrics
        cells = "".join(f"{measured[m]:>11.4g}" if m in measured else f"{'-':>11}" for m in shown)
        lines.append(f"{seed:>6}  {status:<10} {step:>7}  {cells}")
    lines.append(f"objective ({metric}, median over seeds): {last.objective:.6g}, "
                 f"diverged {last.div_rate:.0%}")  # fmt: skip
    return "\n".join(lines)


# --- ganlab sweep -------------------------------------------------------------------------------


def _sweep(args: argparse.Namespace) -> int:
    from ganlab import spec as specs

    if args.resume and args.num_samples is not None:
        raise UsageError(f"{args.file}: --num-samples cannot change a sweep being resumed: "
                         "--resume runs the samples it was started with")  # fmt: skip
    spec = specs.load(args.file, smoke=args.smoke, num_samples=args.num_samples,
                      data_dir=args.data_dir, storage=args.storage)  # fmt: skip
    if args.smoke:
        spec = dataclasses.replace(spec, name=f"{spec.name}-smoke")

    from ganlab import preflight, storage, sweep

    if args.allow_changed_plugins and not args.resume:
        raise UsageError(f"{args.file}: --allow-changed-plugins goes with --resume only")
    if args.allow_changed_plugins:
        preflight.accept_changed_plugins(spec)
    preflight.check(spec, args.resume, args.address)
    run_dir = sweep.run(spec, address=args.address, resume=args.resume)
    print(format_sweep_summary(run_dir, spec))
    if args.no_report:
        return 0
    written = _write_report(run_dir)
    if written and spec.is_remote_storage:
        storage.push(run_dir, spec.storage_uri, [REPORT])
        print(f"tables and report copied to {spec.storage_uri}")
    return 0 if written is not None else 1


def _write_report(run_dir: Path) -> bool | None:
    """Write the run's report after its training: True; False where it is refused (rows not
    comparable); None where it cannot be written (the tables are whole)."""
    from analysis.report import write_report
    from ganlab.results import Incomparable

    try:
        print(f"report: {write_report(run_dir, progress=print)}")
    except Incomparable as error:  # the sweep ran; the report is refused, not the sweep
        print(f"report: not written: {error}")
        return False
    except OSError as error:  # a full disk, say: the tables are whole, the report is not
        print(f"report: not written ({error.strerror}); the tables are whole: run `ganlab "
              f"report {run_dir}` once it can be written", file=sys.stderr)  # fmt: skip
        return None
    return True


def _confirm(args: argparse.Namespace) -> int:
    from ganlab import confirm

    run_dir = _require_run(args.run_dir)
    done = confirm.run(run_dir, args.top, args.seeds, address=args.address, resume=args.resume)
    spec = confirm.spec_of(run_dir, confirm.saved_plan(run_dir))
    print(format_sweep_summary(run_dir, spec))
    print(f"confirmation: {done}")
    if args.no_report:
        return 0
    return 0 if _write_report(run_dir) is not None else 1


PHASE_WORDS = {  # `results.SEARCH`, `results.CONFIRM`
    "search": "the search's seeds",
    "confirm": "ranked on the confirmation's fresh seeds (`ganlab confirm`)",
}


def format_sweep_summary(run_dir: Path, spec: Any, top: int = 5) -> str:
    from ganlab import results

    trials, _ = results.load(run_dir)
    if trials.empty:
        return f"\nno trial reported a result; Ray's logs are in {run_dir}"
    try:
        ranked = results.summarise(trials).head(top).to_string(index=False)
    except results.Incomparable as error:  # the sweep ran: say why there is no ranking
        ranked = str(error)
    shown, phase = results.shown_rows(trials)
    lines = ["", f"best configurations ({spec.metric}, {spec.mode}; median over seeds; "
             f"{PHASE_WORDS[phase]}):", ranked, "",
             f"trials: {shown.trial_id.nunique()}, seed runs: {len(shown)}; "
             f"{results.describe_rates(results.rates(shown.status))}",
             f"tables: {run_dir / TRIALS}, {run_dir / METRICS_TABLE}"]  # fmt: skip
    journal = run_dir / JOURNAL
    if journal.exists():
        lines.append(f"optuna study {spec.name!r}: {journal} (optuna-dashboard {journal})")
    return "\n".join(lines)


# --- ganlab results / report --------------------------------------------------------------------


def _results(args: argparse.Namespace) -> int:
    from ganlab import query, results

    args.run_dir = _require_run(args.run_dir)
    trials, _ = results.load(args.run_dir)
    if args.where:
        trials = query.select(trials, args.where)
    searched = cli_runs.searched_fields(args.run_dir, trials)
    trials, phase = results.shown_rows(trials)
    if phase == results.CONFIRM:
        print(f"{PHASE_WORDS[phase]}; the search's rows: `--where \"phase == 'search'\"`")
    summary = results.summarise(trials)
    table = cli_runs.seed_rows(trials, summary) if args.seeds else summary
    table = cli_runs.with_fields(table, trials, searched)
    default = cli_runs.default_columns(table, searched, args.seeds, list(summary.columns))
    shown = cli_runs.columns(table, args.columns, default)
    print(cli_runs.render(table.head(args.top)[shown]))
    return 0


def _run_location(text: str) -> Path | str:
    """A run directory, or a URI kept as written (`Path` would fold `s3://` into `s3:/`)."""
    from ganlab import storage

    return text if storage.is_uri(text) else Path(text)


def _require_run(run_dir: Path | str) -> Path:
    """The run's directory, a local copy for a URI (`storage.open_run`); refused without tables."""
    from ganlab import results, storage

    try:
        local = storage.open_run(run_dir)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    problem = results.missing_tables(local, shown=run_dir)
    if problem:
        raise UsageError(problem)
    return local


def _report(args: argparse.Namespace) -> int:
    from analysis import report

    args.run_dir = _require_run(args.run_dir)
    if args.compare is not None:
        args.compare = _require_run(args.compare)
    if args.compare:
        out = args.out or args.run_dir / COMPARISON
        print(report.write_comparison(args.run_dir, args.compare, out))
    else:
        print(report.write_report(args.run_dir, out=args.out, progress=print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
