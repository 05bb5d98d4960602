"""`ganlab report`: the results tables of a run directory as one self-contained HTML page.

plotly.js is inlined once in the page's head and every figure is a div that uses it, so the
report opens offline with no CDN. Sample images are PNG data URIs. The file is written to a
temporary name and renamed, so a reader never sees half a report.
"""

import datetime
import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis import (
    compare,
    convergence,
    distributions,
    effects,
    modes,
    samples,
    search,
    stability,
    summary,
)
from analysis.aggregate import (
    Importance,
    Objective,
    budget_curves,
    config_stats,
    format_value,
    is_better,
    objective_of,
    param_importance,
    searched_parameters,
)
from ganlab.results import check_comparable, load, load_samples, sample_trial_ids
from ganlab.rundir import METRICS_TABLE, REPORT, TRIALS, atomic_write_text

Progress = Callable[[str], None]
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class Run(NamedTuple):
    """Everything the sections draw from, computed once."""

    run_dir: Path
    trials: pd.DataFrame
    metrics: pd.DataFrame
    samples: pd.DataFrame
    objective: Objective
    stats: pd.DataFrame  # per configuration, best first (aggregate.config_stats)
    importance: Importance
    params: list[str]  # searched parameters, the most important first


class Section(NamedTuple):
    id: str
    title: str
    how: str  # one or two plain sentences on how to read it
    body: str  # HTML


def write_report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write the report of `run_dir` to `out` (default `RUN_DIR/report.html`) and return its
    path. `progress`, if given, receives a short status line per step. Raises
    FileNotFoundError when `run_dir` holds no results tables."""
    say = progress or (lambda _line: None)
    run = load_run(run_dir, say)
    if run.trials.empty:
        note = '<p class="note">The run has recorded no trials yet.</p>'
        sections = [Section("summary", "Summary", "", note)]
    else:
        sections = report_sections(run, say)
    say("writing HTML")
    title = f"ganlab report · {_sweep_name(run)}"
    page = render_page(title, _header(run), sections)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    atomic_write_text(path, page)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def load_run(run_dir: str | os.PathLike, progress: Progress | None = None) -> Run:
    """Read a run directory's tables and compute the aggregates every section shares."""
    say = progress or (lambda _line: None)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    say(f"reading tables in {run_dir}")
    trials, metrics = load(run_dir)
    values = [c for c in trials if c.startswith(("final_", "best_"))]
    trials = _numeric(trials, ["objective", "div_rate", *values])
    metrics = _numeric(metrics, [c for c in metrics if c not in NON_NUMERIC_METRIC_COLUMNS])
    say(f"aggregating {len(trials)} trial × seed rows, {len(metrics)} evaluations")
    objective = objective_of(trials)
    check_comparable(trials, str(run_dir))  # never rank numbers of different measurements
    stats = config_stats(trials)
    sample_table = load_samples(run_dir, _shown_trials(run_dir, trials, stats))
    say("parameter importance")
    importance = param_importance(trials, run_dir)
    searched = searched_parameters(trials)
    params = [p for p in importance.params if p in searched]
    params += [p for p in searched if p not in params]
    return Run(run_dir, trials, metrics, sample_table, objective, stats, importance, params)


def _shown_trials(run_dir: Path, trials: pd.DataFrame, stats: pd.DataFrame) -> set[str]:
    """The trials whose samples the report shows: only theirs are read (CIFAR-10 samples take
    some 2 MB a trial)."""
    saved = trials[trials["trial_id"].isin(sample_trial_ids(run_dir))]
    shown = pd.concat(samples.shown_configs(stats, set(saved["config_id"])).values())
    return set(saved.loc[saved["config_id"].isin(shown.index), "trial_id"])


NON_NUMERIC_METRIC_COLUMNS = (
    "sweep", "trial_id", "config_id", "seed", "step", "diverged", "protocol",
)  # fmt: skip


def _numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Value columns as floats: a column written with only missing values (an empty run, a
    metric no trial reported) may come back as objects, which numpy cannot compare."""
    loose = [c for c in columns if c in frame and frame[c].dtype.kind not in "fiu"]
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in loose})


def report_sections(run: Run, progress: Progress | None = None) -> list[Section]:
    """The report's sections in reading order, the summary first."""
    say = progress or (lambda _line: None)
    builders = [
        _summary_section,
        _effects_section,
        _convergence_section,
        _distribution_section,
        _divergence_section,
        _modes_section,
        _precision_recall_section,
        _importance_section,
        _parallel_section,
        _budget_section,
        _samples_section,
    ]
    sections = []
    for i, build in enumerate(builders, start=1):
        say(f"[{i}/{len(builders)}] {build.__name__.strip('_').removesuffix('_section')}")
        sections.append(build(run))
    return sections


def _better(run: Run) -> str:
    return "lower" if is_better(run.objective.mode) else "higher"


def _summary_section(run: Run) -> Section:
    info = summary.get_summary_info(run.trials, run.stats, run.objective, run.params)
    how = (
        f"The best configurations by the robust objective: the median {run.objective.metric} "
        f"over seeds with a diverged seed counted as the worst value ({_better(run)} is "
        "better). Medians and IQRs are over the seeds that did not diverge."
    )
    return Section("summary", "Summary", how, render_summary(info))


def _effects_section(run: Run) -> Section:
    info = effects.get_effects_info(
        run.trials, run.params, run.objective.metric, run.objective.mode
    )
    how = (
        "Each searched factor's levels against its first level (numbers in up to three "
        "quantile bins): the change in the robust objective (median over seeds, a diverged "
        "seed counted as the worst value), in modes captured and in the divergence rate, "
        "with 95 % intervals from a bootstrap over configurations and their seeds. Red "
        "marks an interval that excludes no effect; grey, one the data cannot tell from none."
    )
    sentences = effects.effect_sentences(info)
    body = figure_html(effects.plot_effects(info), "fig-effects") + (
        '<ul class="effects">' + "".join(f"<li>{html.escape(t)}</li>" for t in sentences) + "</ul>"
    )
    return Section("effects", "Effects of the searched factors", how, body)


def _floor_note(run: Run) -> str:
    """The real-data floor beside a figure of FID (empty for other metrics)."""
    if run.objective.metric != "fid":
        return ""
    protocols = [summary.parse_protocol(p) for p in run.trials["protocol"].dropna().unique()]
    floors = [format_value(float(p["fid_floor"])) for p in protocols if "fid_floor" in p]
    if not floors:
        return ""
    return (
        f" Real-data floor: FID {' / '.join(floors)} (training samples against the held-out "
        "reference); no generator should be read as better than it."
    )


def _convergence_section(run: Run) -> Section:
    info = convergence.get_convergence_info(
        run.metrics, run.stats, run.params, run.objective.metric
    )
    how = (
        "Each line is a configuration's median over seeds, with its interquartile range "
        "shaded; solid lines are the best ranked, dotted the worst. A line that stops is "
        "one whose seeds all diverged; click a legend entry to hide or show it."
    ) + _floor_note(run)
    body = figure_html(convergence.plot_convergence(info), "fig-convergence")
    return Section("convergence", "Convergence", how, body)


def _distribution_section(run: Run) -> Section:
    info = distributions.get_distribution_info(
        run.trials, run.objective.metric, run.objective.mode
    )
    how = (
        f"Each point is one trial's objective ({_better(run)} is better), over a box of its "
        "group's quartiles; groups are sorted best median first. Red crosses are trials "
        "with at least half their seeds diverged, whose objective the divergence penalty "
        "sets; they are kept out of the boxes."
    ) + _floor_note(run)
    body = figure_html(distributions.plot_distribution(info), "fig-distribution")
    return Section("distribution", "Final objective by loss, architecture and penalty", how, body)


def _divergence_section(run: Run) -> Section:
    info = stability.get_divergence_info(run.trials)
    how = (
        "The share of seeds that diverged (non-finite losses or exploding gradients) for each "
        f"loss and {info.lr} range; n is the number of seeds in the cell. Red cells are "
        "where training is unstable."
    )
    body = figure_html(stability.plot_divergence(info), "fig-divergence")
    return Section("divergence", "Divergence rate by loss and learning rate", how, body)


def _modes_section(run: Run) -> Section:
    heat = modes.get_mode_heatmap_info(run.trials, run.params)
    if heat is None:
        return Section(
            "modes",
            "Mode coverage",
            "",
            '<p class="note">This run\'s datasets define no modes.</p>',
        )
    per_loss = modes.get_modes_per_loss_info(run.trials)
    how = (
        "Modes captured (more is better; one means the generator collapsed) and the share "
        "of high-quality samples, averaged over seeds that did not diverge, across the two "
        "most important parameters (top) and per loss (bottom)."
    )
    body = figure_html(modes.plot_mode_heatmap(heat), "fig-modes-heatmap") + figure_html(
        modes.plot_modes_per_loss(per_loss), "fig-modes-loss"
    )
    return Section("modes", "Mode coverage and sample quality", how, body)


def _precision_recall_section(run: Run) -> Section:
    info = modes.get_precision_recall_info(run.stats, run.params, run.objective.metric)
    how = (
        "Precision is the share of generated samples that look real (quality); recall is "
        "the share of the real data the generator covers (diversity). Good configurations "
        "sit top right; mode collapse shows as high precision with low recall."
    )
    body = figure_html(modes.plot_precision_recall(info), "fig-precision-recall")
    return Section("precision-recall", "Precision against recall", how, body)


def _importance_section(run: Run) -> Section:
    how = (
        "How much of the objective's variation each searched parameter explains on its own; "
        "spend tuning effort on the top ones."
    )
    body = figure_html(search.plot_importance(run.importance), "fig-importance")
    return Section("importance", "Parameter importance", how, body)


def _parallel_section(run: Run) -> Section:
    info = search.get_parallel_info(
        run.trials, run.params, run.objective.metric, run.objective.mode
    )
    how = (
        "Each line is a trial, crossing each parameter's axis at its value and ending at its "
        "objective; the brightest lines are the best. Drag along an axis to keep only a "
        "range."
    )
    body = figure_html(search.plot_parallel(info), "fig-parallel")
    return Section("parallel", "Parameters against the objective", how, body)


def _budget_section(run: Run) -> Section:
    info = search.BudgetInfo(budget_curves(run.trials), run.objective.metric, run.objective.mode)
    how = (
        "The best objective you can expect after drawing n trials at random from this sweep "
        "(the bootstrap of Lucic et al. 2018), with a 95 % band. A curve that flattens early "
        "needs little search; one that keeps improving rewards a bigger budget."
    )
    body = figure_html(search.plot_budget(info), "fig-budget")
    return Section("budget", "Expected best objective versus budget", how, body)


def _samples_section(run: Run) -> Section:
    info = samples.get_samples_info(run.samples, run.trials, run.stats, run.params)
    if not info.sets:
        return Section(
            "samples", "Samples", "", '<p class="note">No samples were saved for this run.</p>'
        )
    body = ""
    if any(s.kind == "points" for s in info.sets):
        body += figure_html(samples.plot_sample_points(info), "fig-samples")
    body += samples.sample_grids_html(info)
    how = (
        "Samples each seed drew at its last evaluation, for the best and the worst "
        "configurations that saved any, beside real data. Look for missing modes (collapse) "
        "and blurry or off-manifold samples (poor quality)."
    )
    return Section("samples", "Samples of the best and worst configurations", how, body)


def write_comparison(
    run_a: str | os.PathLike,
    run_b: str | os.PathLike,
    out: str | os.PathLike,
    progress: Progress | None = None,
) -> Path:
    """Write a page comparing two runs to `out` and return its path: headline numbers, the
    best configurations of each, budget curves, objective and divergence per loss. Says so
    first when the runs' evaluation protocols or objectives differ."""
    say = progress or (lambda _line: None)
    runs = [load_run(run_a, say), load_run(run_b, say)]
    names = [f"{key}: {_sweep_name(r)}" for key, r in zip("AB", runs, strict=True)]
    infos = [summary.get_summary_info(r.trials, r.stats, r.objective, r.params) for r in runs]
    info = compare.ComparisonInfo(names, infos, compare.comparison_warnings(infos))
    metric, mode = runs[0].objective.metric, runs[0].objective.mode
    tables = [r.trials for r in runs]
    say("comparison figures")
    budget = compare.get_budget_comparison_info(names, tables, metric, mode)
    per_loss = compare.get_per_loss_info(names, tables, metric, mode)
    sections = [
        Section(
            "summary",
            "Summary",
            "The two runs' headline numbers side by side.",
            _comparison_summary(info, runs),
        ),
        Section(
            "budget",
            "Expected best objective versus budget",
            "The best objective expected after n random trials of each run (bootstrap "
            "mean); the run whose curve is lower (for a minimised objective) at your "
            "budget is the better search space.",
            figure_html(compare.plot_budget_comparison(budget), "fig-budget"),
        ),
        Section(
            "objective",
            "Objective per loss",
            "Every trial's objective, per loss, one box per run.",
            figure_html(compare.plot_objective_per_loss(per_loss), "fig-objective"),
        ),
        Section(
            "divergence",
            "Divergence per loss",
            "The share of seeds that diverged, per loss and run.",
            figure_html(compare.plot_divergence_per_loss(per_loss), "fig-divergence"),
        ),
    ]
    header = "".join(
        f"<p>{html.escape(n)}: <code>{html.escape(str(r.run_dir))}</code></p>"
        for n, r in zip(names, runs, strict=True)
    )
    page = render_page(f"ganlab comparison · {names[0]} vs {names[1]}", header, sections)
    path = Path(out)
    atomic_write_text(path, page)
    say(f"wrote {path}")
    return path


def _sweep_name(run: Run) -> str:
    return str(run.trials["sweep"].iloc[0]) if len(run.trials) else run.run_dir.name


def _comparison_summary(info: compare.ComparisonInfo, runs: list[Run]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(n)}</th>" for n in info.names)
    rows = "".join(
        f"<tr><th>{e(label)}</th>{''.join(f'<td>{e(v)}</td>' for v in values)}</tr>"
        for label, values in compare.headline_rows(info)
    )
    best = "".join(
        f"<h3>Best configurations of {e(n)}</h3>" + _table(s.best, r.objective.metric)
        for n, s, r in zip(info.names, info.summaries, runs, strict=True)
    )
    return (
        "".join(f'<p class="warning">{e(w)}</p>' for w in info.warnings)
        + f'<table class="kv compare"><tr><th></th>{head}</tr>{rows}</table>'
        + best
    )


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a div and script that use the page's single plotly.js."""
    return pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        default_height=f"{fig.layout.height or 450}px",
    )


def render_summary(info: summary.SummaryInfo) -> str:
    """The summary section's HTML: key numbers, the protocol, the best configurations."""
    e = html.escape
    warnings = []
    if len(info.protocols) > 1:
        warnings.append(
            f"This run mixes {len(info.protocols)} evaluation protocols: numbers from "
            "different protocols are not comparable."
        )
    if info.objective.mixed:
        warnings.append("Trials disagree on the objective's metric or mode.")
    warnings += protocol_warnings(info.protocols)
    counts = ", ".join(f"{n} {s}" for s, n in info.status_counts.items() if n)
    facts = [
        (
            "trials",
            f"{info.n_trials} ({info.n_configs} configurations, "
            f"{info.n_seed_rows} trial × seed rows)",
        ),
        ("seeds by status", counts or "none"),
        (
            "diverged",
            f"{_percent(info.diverged_share)} of seeds; "
            f"{_percent(info.trials_with_divergence)} of trials had a diverged seed",
        ),
        ("collapsed", f"{_percent(info.collapsed_share)} of seeds"),
        (
            "objective",
            f"{info.objective.metric} ({info.objective.mode}imise), robust median over seeds",
        ),
        ("code", "; ".join(info.versions)),
    ]
    if info.verdict:
        facts.insert(5, ("best configuration", info.verdict))
    floors = fid_floors(info.protocols)
    if floors:
        facts.insert(5, ("FID floor", floors))
    protocol = [(k, v) for k, v in info.setup.items()]
    for i, p in enumerate(info.protocols):
        name = "protocol" if len(info.protocols) == 1 else f"protocol {i + 1}"
        protocol.append((name, ", ".join(f"{k}={v}" for k, v in p.items())))
    return (
        "".join(f'<p class="warning">{e(w)}</p>' for w in warnings)
        + '<div class="facts">'
        + _key_values("Run", facts)
        + _key_values("Evaluation protocol", protocol)
        + "</div><h3>Best configurations</h3>"
        + _table(info.best, info.objective.metric)
    )


def fid_floors(protocols: list[dict]) -> str:
    """The real-data floor of FID under each protocol, in words ("" when none recorded)."""
    floors = [p["fid_floor"] for p in protocols if "fid_floor" in p]
    if not floors:
        return ""
    values = " / ".join(format_value(float(f)) for f in floors)
    return (
        f"{values}: the FID of training samples against the held-out reference, what a "
        "generator that copies its training data scores. No FID below it means anything."
    )


def protocol_warnings(protocols: list[dict]) -> list[str]:
    """What makes a run's FID incomparable with published numbers, from its protocols."""
    warnings = []
    for p in protocols:
        if p.get("rank_deficient"):
            warnings.append(
                f"FID here is computed from fewer samples ({min(p['n_real'], p['n_fake'])}) "
                f"than feature dimensions ({p['dim']}): its covariances are singular and "
                "the value is biased; compare it only within this run."
            )
        if p.get("extractor") == "inception" and p.get("standard_weights") is False:
            warnings.append(
                "The Inception weights are not the standard FID file (hash checked): FID "
                "is not comparable with published numbers."
            )
    return warnings


def _percent(share: float) -> str:
    return "–" if share != share else f"{100 * share:.1f} %"


def _key_values(title: str, pairs: list[tuple[str, str]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in pairs
    )
    return f'<table class="kv"><caption>{html.escape(title)}</caption>{rows}</table>'


def _table(frame: pd.DataFrame, metric: str) -> str:
    names = {
        "objective": "objective",
        f"{metric}_median": f"{metric} median",
        f"{metric}_iqr": f"{metric} IQR",
        "div_rate": "diverged",
        "collapse_rate": "collapsed",
        "n_seeds": "seeds",
    }
    head = "".join(f"<th>{html.escape(names.get(c, c))}</th>" for c in frame.columns)
    body = []
    for config_id, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            value = row[c]
            text = _percent(value) if c in ("div_rate", "collapse_rate") else format_value(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f'<tr title="config {html.escape(str(config_id))}">{"".join(cells)}</tr>')
    return f'<div class="scroll"><table class="best"><tr>{head}</tr>{"".join(body)}</table></div>'


def _header(run: Run) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<p>Run directory <code>{html.escape(str(run.run_dir))}</code> · generated {now} · "
        f"read from {TRIALS} and {METRICS_TABLE} with pandas: "
        f"<code>ganlab.results.load(run_dir)</code></p>"
    )


def render_page(title: str, header: str, sections: list[Section]) -> str:
    """The whole page: plotly.js once in the head, a contents list, then each section."""
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>'
        + (f'<p class="how">{html.escape(s.how)}</p>' if s.how else "")
        + s.body
        + "</section>"
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style>"
        # Inline plotly.js once; every figure below calls it (no CDN: the report works offline).
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><header><h1>{html.escape(title)}</h1>{header}</header>"
        f"<nav><ol>{toc}</ol></nav><main>{body}</main></body></html>\n"
    )


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; line-height: 1.45; }
header h1 { font-size: 1.6em; margin: 24px 0 4px; }
header p { color: #555; margin: 0 0 12px; }
nav ol { columns: 2; margin: 0 0 16px; padding-left: 20px; }
section { border-top: 1px solid #ddd; padding-top: 8px; margin-top: 24px; }
h2 { font-size: 1.3em; margin: 8px 0 4px; }
h3 { font-size: 1.05em; margin: 16px 0 4px; }
p.how { color: #444; max-width: 80ch; margin: 0 0 8px; }
p.note { color: #666; font-style: italic; }
p.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 8px 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 24px; }
table { border-collapse: collapse; font-size: 0.9em; }
table caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.kv th { text-align: left; color: #555; font-weight: normal; padding: 2px 12px 2px 0;
              vertical-align: top; }
table.kv td { max-width: 60ch; }
div.scroll { overflow-x: auto; }
table.best { margin-top: 4px; white-space: nowrap; font-size: 0.85em; }
table.best th, table.best td { border-bottom: 1px solid #eee; padding: 3px 7px;
                               text-align: right; }
table.best tr:first-child th { border-bottom: 2px solid #ccc; }
.sample-row { margin: 12px 0; }
.sample-row .detail { color: #666; font-size: 0.85em; margin: 0 0 4px; }
.grids { display: flex; flex-wrap: wrap; gap: 12px; }
figure.grid { margin: 0; text-align: center; font-size: 0.8em; color: #555; }
img.sample-grid { image-rendering: pixelated; display: block; }
"""
