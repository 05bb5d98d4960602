"""`ganlab report`: the results tables of a run directory as one self-contained HTML page.

The page's sections in reading order, each built from the run's tables (`analysis.loading`)
and drawn by its module; the page around them is `analysis.page`. Sample images are PNG data
URIs. The file is written to a temporary name and renamed, so a reader never sees half a report.
"""

import datetime
import html
import os
from pathlib import Path

from analysis import (
    compare,
    convergence,
    distributions,
    effects,
    lineage,
    modes,
    samples,
    search,
    stability,
    summary,
)
from analysis.aggregate import budget_curves, format_value, is_better
from analysis.loading import Progress, Run, load_run, sweep_name
from analysis.page import Section, figure_html, key_values, percent, render_page, table
from ganlab.rundir import METRICS_TABLE, REPORT, TRIALS, atomic_write_text

__all__ = ["Run", "Section", "load_run", "report_sections", "write_comparison", "write_report"]


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
    title = f"ganlab report · {sweep_name(run)}"
    page = render_page(title, _header(run), sections)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    atomic_write_text(path, page)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


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
        _lineage_section,
        _samples_section,
    ]
    sections = []
    for i, build in enumerate(builders, start=1):
        say(f"[{i}/{len(builders)}] {build.__name__.strip('_').removesuffix('_section')}")
        section = build(run)
        if section is not None:  # a section only some runs have (the lineage)
            sections.append(section)
    return sections


def _better(run: Run) -> str:
    return "lower" if is_better(run.objective.mode) else "higher"


def _summary_section(run: Run) -> Section:
    info = summary.get_summary_info(run.trials, run.stats, run.objective, run.params,
                                    confirmed=run.confirmed)  # fmt: skip
    confirmed = ""
    if run.confirmed:
        confirmed = (
            f"Ranked on the confirmation (`ganlab confirm`): the {len(run.confirmed[1])} best "
            "configurations of the search retrained on fresh seeds, which the search never saw; "
            "every other section shows the search. "
        )
    how = confirmed + (
        f"The best configurations by the robust objective: the median {run.objective.metric} "
        f"over seeds with a diverged seed counted as the worst value ({_better(run)} is "
        "better), at the step in the at-step column. Those that trained every step come first; "
        "then those stopped early (ASHA stops a trial at a rung when others did better there), "
        "the furthest first, so no two are ranked on numbers from different steps unless the "
        "at-step column says so. Medians and IQRs are over the seeds that did not diverge; "
        "— marks a value that does not apply (clip without the wasserstein loss)."
    )
    return Section("summary", "Summary", how, render_summary(info))


def _effects_section(run: Run) -> Section:
    trials, budget = effects.at_common_step(run.trials, run.metrics)
    info = effects.get_effects_info(
        trials, run.params, run.objective.metric, run.objective.mode, budget=budget
    )
    how = (
        "Each searched factor's levels against its first level (numbers in up to three "
        "quantile bins): the change in the robust objective (median over seeds, a diverged "
        "seed counted as the worst value), in modes captured and in the divergence rate, "
        "with 95 % intervals from a bootstrap over configurations and their seeds. Red "
        "marks an interval that excludes zero; grey, one the data cannot tell from none. "
        "An outcome that does not vary over a factor's seeds is left out for it. "
    ) + budget.why
    sentences = effects.effect_sentences(info)
    rows = effects.effect_rows(info)
    body = (
        figure_html(effects.plot_effects(info), "fig-effects")
        + f'<div class="effects" data-step="{budget.step}">'
        + "".join(f"<p>{html.escape(t)}</p>" for t in sentences)
        + (table(effects.EFFECT_COLUMNS, rows, css="best sortable effects") if rows else "")
        + "</div>"
    )
    return Section("effects", "Effects of the searched factors", how, body)


def _floor_note(run: Run) -> str:
    """The real-data floor beside a figure of FID (empty for other metrics)."""
    if run.objective.metric != "fid":
        return ""
    protocols = summary.run_protocols(run.trials)
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
        "shaded; solid lines are the best ranked, dotted the worst, each named with the step "
        "it reached and how its seeds ended. A line stops where its trial stopped: ASHA "
        "stopped it at a rung (pruned), every seed diverged, or it ended. D's and G's losses "
        "are drawn per loss function, since their scales differ; click a legend entry to "
        "hide or show a configuration."
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
        "sets, and grey diamonds trials stopped early (ASHA), whose objective is from an "
        "earlier step; both are kept out of the boxes."
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
        "most important parameters (top) and per loss (bottom). A seed ASHA stopped counts "
        "with its values at the step it stopped."
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
        "objective; the brightest lines are the best. Where trials stopped at different "
        "steps, the steps axis says where each objective is from. Drag along an axis to "
        "keep only a range."
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


def _lineage_section(run: Run) -> Section | None:
    info = lineage.get_lineage_info(run.trials, run.metrics)
    if info is None:  # no exploits: not a PBT run, or none happened
        return None
    how = (
        "Population Based Training: each row is a trial over the steps it trained; each arrow "
        "an exploit, from the trial whose checkpoint it cloned to the trial that went on from "
        "it, at that checkpoint's step. Hover a dot for the values it changed."
    )
    body = figure_html(lineage.plot_lineage(info), "fig-lineage")
    return Section("lineage", "Lineage of the population", how, body)


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
        "configurations that saved any, beside real data; each panel is titled with the step "
        "it was drawn at and how its seeds ended (a pruned one was stopped early by ASHA, "
        "not judged at the end). Look for missing modes (collapse) and blurry or "
        "off-manifold samples (poor quality)."
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
    names = [f"{key}: {sweep_name(r)}" for key, r in zip("AB", runs, strict=True)]
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


def _comparison_summary(info: compare.ComparisonInfo, runs: list[Run]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(n)}</th>" for n in info.names)
    rows = "".join(
        f"<tr><th>{e(label)}</th>{''.join(f'<td>{e(v)}</td>' for v in values)}</tr>"
        for label, values in compare.headline_rows(info)
    )
    best = "".join(
        f"<h3>Best configurations of {e(n)}</h3>" + configs_table(s.best, r.objective.metric)
        for n, s, r in zip(info.names, info.summaries, runs, strict=True)
    )
    return (
        "".join(f'<p class="warning">{e(w)}</p>' for w in info.warnings)
        + f'<table class="kv compare"><tr><th></th>{head}</tr>{rows}</table>'
        + best
    )


def render_summary(info: summary.SummaryInfo) -> str:
    """The summary section's HTML: key numbers, the protocol, the best configurations."""
    e = html.escape
    counts = ", ".join(f"{n} {s}" for s, n in info.status_counts.items() if n)
    stopped = sum(n for s, n in info.status_counts.items() if s in ("pruned", "running"))
    collapsed = (
        f"{percent(info.collapsed_share)} of the {info.n_ended} seeds that trained every step"
    )
    if stopped:
        collapsed += (
            f"; the {stopped} seeds stopped early (pruned by ASHA or still running) are not "
            "judged, whatever their modes at the step they stopped"
        )
    facts = [
        (
            "trials",
            f"{info.n_trials} ({info.n_configs} configurations, "
            f"{info.n_seed_rows} trial × seed rows)",
        ),
        ("seeds by status", counts or "none"),
        (
            "diverged",
            f"{percent(info.diverged_share)} of the {info.n_judged} seeds judged (trained "
            "every step or diverged; pruned seeds are left out); "
            f"{percent(info.trials_with_divergence)} of trials had a diverged seed",
        ),
        ("collapsed", collapsed),
        (
            "objective",
            f"{info.objective.metric} ({info.objective.mode}imise), robust median over seeds",
        ),
        ("code", "; ".join(info.versions)),
    ]
    if info.verdict:
        facts.insert(5, ("best configuration", info.verdict))
    if info.fid_floor:
        facts.insert(5, ("FID floor", info.fid_floor))
    protocol = [(k, v) for k, v in info.setup.items()]
    for i, p in enumerate(info.protocols):
        name = "protocol" if len(info.protocols) == 1 else f"protocol {i + 1}"
        protocol.append((name, ", ".join(f"{k}={v}" for k, v in p.items())))
    return (
        "".join(f'<p class="warning">{e(w)}</p>' for w in info.warnings)
        + '<div class="facts">'
        + key_values("Run", facts)
        + key_values("Evaluation protocol", protocol)
        + "</div><h3>Best configurations</h3>"
        + configs_table(info.best, info.objective.metric)
    )


CONFIG_HEADS = {"at_step": "at step", "statuses": "seeds by status", "div_rate": "diverged",
                "collapse_rate": "collapsed (of seeds that trained every step)",
                "n_seeds": "seeds"}  # fmt: skip


def configs_table(frame, metric: str) -> str:
    """Ranked configurations, one a row, each with the step its numbers are from and its
    seeds by status."""
    names = {
        **CONFIG_HEADS,
        f"{metric}_median": f"{metric} median",
        f"{metric}_iqr": f"{metric} IQR",
    }
    rates = ("div_rate", "collapse_rate")
    rows = [
        [(percent(row[c]), row[c]) if c in rates else row[c] for c in frame.columns]
        for _, row in frame.iterrows()
    ]
    return table(
        [names.get(c, c) for c in frame.columns],
        rows,
        row_titles=[f"config {c}" for c in frame.index],
        cell_classes=[f"col-{c}" for c in frame.columns],
    )


def _header(run: Run) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<p>Run directory <code>{html.escape(str(run.run_dir))}</code> · generated {now} · "
        f"read from {TRIALS} and {METRICS_TABLE} with pandas: "
        f"<code>ganlab.results.load(run_dir)</code></p>"
    )
