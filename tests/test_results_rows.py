"""The rows of the results tables, built from typed reports without Ray: statuses and their
precedence, divergence, final and best values, where a seed's curve ends; and the report
contract itself (a missing key named, Ray's keys ignored, `to_dict` round trips)."""

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from raytrials import report as ray_line

from ganlab import collect, results
from ganlab.config import TrialConfig
from ganlab.reports import SIGNALS, EvalReport, ReportError, ResultLine, RunContext, SeedReport
from ganlab.trial import Trial

CONFIG = TrialConfig.from_dict(
    {"dataset": "ring8", "steps": 30, "eval_every": 10, "seeds": [0, 1]}
).to_dict()
CONTEXT = {"sweep": "unit", "trial_id": "t1", "config_id": results.config_hash(CONFIG),
           "ganlab_version": "0.0.0", "git_sha": "f" * 40, "plugins": ""}  # fmt: skip
PROTOCOL = '{"extractor":"raw","k":5,"n_fake":50,"n_real":50}'


def live(fid: float, precision: float, signal: float | None = 0.5, **fields) -> SeedReport:
    signals = {} if signal is None else {name: signal + i for i, name in enumerate(SIGNALS)}
    metrics = {"fid": fid, "precision": precision, "modes": 8.0}
    return SeedReport(metrics=metrics, signals=signals, **fields)


def line(step: int, seeds: dict[int, SeedReport], index: int, **fields) -> ResultLine:
    values = {"objective": 10.0 + index, "div_rate": 0.0, "collapse_rate": 0.0,
              "wall_s": 1.5 * (index + 1), "samples_per_s": 800.0 + index, "device": "cpu",
              "protocol": PROTOCOL, "last": step >= CONFIG["steps"]}  # fmt: skip
    report = EvalReport(step=step, seeds=seeds, **{**values, **fields})
    context = RunContext(trial_config=CONFIG, node_id=f"node-{index}", started_at=100.0 + index,
                         reported_at=200.0 + index, resumed_from_step=None)  # fmt: skip
    return ResultLine(report, context, trial_id="t1", node_ip=f"10.0.0.{index}")


def a_trial() -> list[ResultLine]:
    """Seed 0 trains to the end; seed 1 diverges at the evaluation of step 20 (its fakes went
    non-finite there) and is reported diverged again at step 30."""
    fid0, precision0 = (3.0, 1.0, 2.0, 2.5), (0.5, 0.9, 0.7, 0.6)
    gone = SeedReport(diverged_step=20)
    seed1 = (live(4.0, 0.2, None), live(0.5, 0.4), gone, gone)
    lines = []
    for i, step in enumerate((0, 10, 20, 30)):
        seed0 = live(fid0[i], precision0[i], None if step == 0 else 0.5)
        lines.append(line(step, {0: seed0, 1: seed1[i]}, i, div_rate=0.5 if step >= 20 else 0.0))
    return lines


def trial_rows(lines: list[ResultLine], error: str = "") -> dict[int, dict]:
    rows = collect._trial_rows(lines, CONFIG, error, CONTEXT)
    return {row["seed"]: row for row in rows}


def metric_rows(lines: list[ResultLine]) -> dict[tuple[int, int], dict]:
    return {(row["seed"], row["step"]): row for row in collect._metric_rows(lines, CONTEXT)}


# --- the trials table -------------------------------------------------------------------------


def test_trial_rows_hold_every_column_and_the_last_reports_values():
    lines = a_trial()
    rows = trial_rows(lines)
    assert all(set(row) == set(results.TRIAL_COLUMNS) for row in rows.values())
    done = rows[0]
    assert (done["status"], done["error"], done["diverged_step"]) == ("completed", "", None)
    assert done["steps_done"] == 30
    assert done["objective"] == pytest.approx(13.0) and done["div_rate"] == pytest.approx(0.5)
    assert done["wall_s"] == pytest.approx(6.0)
    assert (done["started_at"], done["ended_at"]) == (pytest.approx(100.0), pytest.approx(203.0))
    assert (done["device_used"], done["node"], done["node_ip"]) == ("cpu", "node-3", "10.0.0.3")
    assert done["protocol"] == PROTOCOL
    assert {k: done[k] for k in ("sweep", "trial_id", "config_id", "git_sha")} == {
        k: CONTEXT[k] for k in ("sweep", "trial_id", "config_id", "git_sha")}  # fmt: skip
    assert (done["dataset"], done["steps"], done["lr_d"]) == ("ring8", 30, CONFIG["lr_d"])
    assert "seeds" not in done


def test_final_and_best_values_follow_each_metrics_direction():
    rows = trial_rows(a_trial())
    done, gone = rows[0], rows[1]
    # fid is a min-metric, precision a max-metric
    assert (done["final_fid"], done["best_fid"]) == (pytest.approx(2.5), pytest.approx(1.0))
    assert done["final_precision"] == pytest.approx(0.6)
    assert done["best_precision"] == pytest.approx(0.9)
    # a diverged seed's final values are the last it measured, before it diverged
    assert (gone["final_fid"], gone["best_fid"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (gone["final_precision"], gone["best_precision"]) == (pytest.approx(0.4),) * 2
    # a metric never measured (no class probabilities on ring8) is NaN, not 0 or a blank
    assert math.isnan(done["final_is"]) and math.isnan(done["best_is"])


def test_a_diverged_seed_records_its_step_and_stops_its_steps_there():
    gone = trial_rows(a_trial())[1]
    assert (gone["status"], gone["diverged_step"], gone["steps_done"]) == ("diverged", 20, 20)


@pytest.mark.parametrize(
    ("diverged", "error", "collapsed", "last_step", "expected"),
    [
        (True, "ValueError: boom", True, 30, "diverged"),  # diverged > error
        (False, "ValueError: boom", True, 30, "error"),  # error > collapsed
        (False, "ValueError: boom", False, 20, "error"),  # error > pruned
        (False, "", True, 30, "collapsed"),  # collapsed > completed
        (False, "", True, 20, "pruned"),  # stopped early: not judged collapsed
        (False, "", False, 30, "completed"),
        (False, "", False, 20, "pruned"),  # stopped by ASHA before `steps`
        (False, "", None, 30, "completed"),  # no modes in the data: never collapsed
    ],
)
def test_status_precedence(diverged, error, collapsed, last_step, expected):
    final = live(1.0, 0.5, collapsed=collapsed)
    if diverged:
        final = SeedReport(diverged_step=last_step)
    lines = [line(0, {0: live(2.0, 0.4, None)}, 0), line(last_step, {0: final}, 1)]
    row = trial_rows(lines, error)[0]
    assert row["status"] == expected
    assert row["error"] == (error if expected == "error" else "")
    assert row["steps_done"] == last_step


def test_a_trial_that_failed_before_reporting_has_error_rows():
    rows = collect._error_rows(CONFIG, "ValueError: boom", CONTEXT)
    assert [row["seed"] for row in rows] == [0, 1]
    assert all(set(row) == set(results.TRIAL_COLUMNS) for row in rows)
    assert {(row["status"], row["error"], row["steps_done"]) for row in rows} == {
        ("error", "ValueError: boom", 0)}  # fmt: skip


# --- the metrics table ------------------------------------------------------------------------


def test_metric_rows_end_at_the_step_a_seed_diverged():
    rows = metric_rows(a_trial())
    assert sorted(rows) == [(0, 0), (0, 10), (0, 20), (0, 30), (1, 0), (1, 10), (1, 20)]
    assert all(set(row) == set(results.METRIC_COLUMNS) for row in rows.values())
    at_divergence = rows[(1, 20)]
    assert at_divergence["diverged"] is True
    assert all(math.isnan(at_divergence[k]) for k in ("fid", "precision", *SIGNALS))
    assert not rows[(1, 10)]["diverged"] and rows[(1, 10)]["fid"] == pytest.approx(0.5)


def test_metric_rows_carry_each_reports_values():
    rows = metric_rows(a_trial())
    row = rows[(0, 20)]
    assert (row["fid"], row["precision"], row["modes"]) == (2.0, 0.7, 8.0)
    assert [row[name] for name in SIGNALS] == pytest.approx([0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    assert (row["objective"], row["div_rate"]) == (pytest.approx(12.0), pytest.approx(0.5))
    assert (row["wall_s"], row["samples_per_s"]) == (pytest.approx(4.5), pytest.approx(802.0))
    assert math.isnan(row["kid"])  # not measured in this report
    assert all(math.isnan(rows[(0, 0)][name]) for name in SIGNALS)  # no steps before step 0


def test_signal_columns_keep_their_order_and_one_spelling():
    assert results.PER_SEED_SIGNALS is SIGNALS
    signal_columns = [c for c in results.METRIC_COLUMNS if c in SIGNALS]
    assert signal_columns == ["loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g"]


def test_rows_write_into_the_tables_schema(tmp_path):
    lines = a_trial()
    tables = {
        results.TRIALS: collect._trial_rows(lines, CONFIG, "", CONTEXT),
        results.METRICS_TABLE: collect._metric_rows(lines, CONTEXT),
    }
    for table, rows in tables.items():
        (tmp_path / table).mkdir()
        results.write_part(tmp_path / table, "t1", rows)
    trials, metrics = results.load(tmp_path)
    # `load` adds the `phase` of each row (the search's here; `ganlab confirm` adds others)
    assert list(trials.columns) == [*results.TRIAL_COLUMNS, "phase"]
    assert list(metrics.columns) == [*results.METRIC_COLUMNS, "phase"]
    assert set(trials.phase) == set(metrics.phase) == {results.SEARCH}
    diverged_step = trials.set_index("seed").diverged_step
    assert pd.isna(diverged_step[0]) and diverged_step[1] == 20
    assert len(metrics) == 7
    assert metrics[metrics.seed == 0].sort_values("step").fid.tolist() == [3.0, 1.0, 2.0, 2.5]


# --- rows from a real trial -------------------------------------------------------------------


def test_rows_of_a_real_trial_with_a_diverged_seed():
    config = TrialConfig.from_dict({"dataset": "ring8", "width": 8, "z_dim": 4, "batch_size": 8,
                                    "n_eval": 50, "steps": 20, "eval_every": 10,
                                    "seeds": [0, 1], "device": "cpu"})  # fmt: skip
    trial = Trial(config)
    trial.run(until=10)
    with torch.no_grad():
        next(trial.seeds[1].g.parameters()).view(-1)[0] = float("nan")  # seed 1 goes bad
    trial.run()
    history = trial.history
    assert [r.step for r in history] == [0, 10, 20] and history[-1].last
    context = RunContext(config.to_dict(), "node", 1.0, 2.0, None)
    lines = [ResultLine(r, context, "t1", "127.0.0.1") for r in history]
    # what Ray writes and the collector reads back is the report itself
    assert [ResultLine.from_dict(json.loads(json.dumps(x.to_dict()))) for x in lines] == lines

    rows = {row["seed"]: row for row in collect._trial_rows(lines, config.to_dict(), "", CONTEXT)}
    assert (rows[1]["status"], rows[1]["diverged_step"], rows[1]["steps_done"]) == (
        "diverged", 11, 11)  # fmt: skip
    assert rows[1]["final_fid"] == pytest.approx(history[1].seeds[1].metrics["fid"])
    fids = [r.seeds[0].metrics["fid"] for r in history]
    assert rows[0]["final_fid"] == pytest.approx(fids[-1])
    assert rows[0]["best_fid"] == pytest.approx(min(fids))
    assert rows[0]["status"] == ("collapsed" if history[-1].seeds[0].collapsed else "completed")
    assert rows[0]["objective"] == pytest.approx(history[-1].objective)
    assert rows[0]["div_rate"] == pytest.approx(0.5)
    # ring8/mlp with two seeds on a CPU trains batched (`execution.RULE`), and the rows say so
    assert {rows[0]["execution_used"], rows[1]["execution_used"]} == {"batched"}

    metrics = collect._metric_rows(lines, CONTEXT)
    assert sorted((r["seed"], r["step"]) for r in metrics) == [
        (0, 0), (0, 10), (0, 20), (1, 0), (1, 10)]  # fmt: skip
    last0 = next(r for r in metrics if (r["seed"], r["step"]) == (0, 20))
    assert last0["loss_d"] == pytest.approx(history[-1].seeds[0].signals["loss_d"])
    assert last0["good_modes"] == pytest.approx(history[-1].seeds[0].metrics["good_modes"])


# --- the contract -----------------------------------------------------------------------------


def test_a_line_as_ray_writes_it_reads_back_and_writes_the_same_keys():
    config = CONFIG
    written = ray_line("t7", config, 20, 1, **{"1": {"diverged": True, "diverged_step": 15}})
    parsed = ResultLine.from_dict(written)  # Ray's own keys (pid, config, date...) are ignored
    assert parsed.trial_id == "t7" and parsed.node_ip == "127.0.0.1"
    assert parsed.report.seeds[1].diverged_step == 15
    assert parsed.report.seeds[0].metrics["fid"] == pytest.approx(1 / 21)
    assert parsed.report.seeds[0].signals["loss_d"] == pytest.approx(0.62)
    ours = parsed.to_dict()
    assert ours == {key: written[key] for key in ours}


def test_to_dict_round_trips():
    for x in a_trial():
        assert ResultLine.from_dict(x.to_dict()) == x
        assert EvalReport.from_dict(x.report.to_dict()) == x.report
        assert RunContext.from_dict(x.context.to_dict()) == x.context
    assert SeedReport.from_dict({"diverged": False}) == SeedReport()


def test_the_json_layout_is_the_one_result_files_always_had():
    x = a_trial()[2].to_dict()
    report_keys = ["step", "objective", "div_rate", "collapse_rate", "wall_s", "samples_per_s",
                   "device", "protocol", "last", "device_name", "execution", "reseeds",
                   "seeds"]  # fmt: skip
    context_keys = ["trial_config", "node_id", "started_at", "reported_at", "resumed_from_step"]
    assert list(x) == [*report_keys, *context_keys, "trial_id", "node_ip"]
    assert x["seeds"]["1"] == {"diverged": True, "diverged_step": 20}
    signals = {name: 0.5 + i for i, name in enumerate(SIGNALS)}
    measured = {"fid": 2.0, "precision": 0.7, "modes": 8.0}
    assert x["seeds"]["0"] == {**measured, **signals, "diverged": False}
    collapsed = live(1.0, 0.5, None, collapsed=True).to_dict()
    assert collapsed["collapsed"] is True and "diverged_step" not in collapsed


# lines written before these keys read with their defaults
ADDED_LATER = ("device_name", "execution", "reseeds")
OUR_KEYS = [
    # `exploits`: only in a line that has some ([] if absent)
    *(f.name for f in dataclasses.fields(EvalReport) if f.name not in (*ADDED_LATER, "exploits")),
    *(f.name for f in dataclasses.fields(RunContext) if f.name != "plugins"),  # "" if absent
    "trial_id",
    "node_ip",
]


@pytest.mark.parametrize("key", OUR_KEYS)
def test_a_missing_key_is_named(key):
    written = a_trial()[1].to_dict()
    del written[key]
    with pytest.raises(ReportError, match=re.escape(repr(key))):
        ResultLine.from_dict(written)


def test_a_line_written_before_the_device_keys_reads_with_their_defaults():
    written = a_trial()[1].to_dict()
    del written["device_name"], written["execution"], written["reseeds"]
    report = ResultLine.from_dict(written).report
    assert (report.device_name, report.execution, report.reseeds) == ("", "", [])


@pytest.mark.parametrize(
    ("seed", "named"),
    [
        ({"fid": 1.0}, "'diverged'"),
        ({"diverged": True}, "'diverged_step'"),
        ({"diverged": False, "fid_score": 1.0}, "'fid_score'"),  # a renamed metric
        ({"diverged": True, "diverged_step": None}, "'diverged_step'"),
    ],
)
def test_a_seed_missing_or_renaming_a_key_is_named(seed, named):
    written = a_trial()[0].to_dict()
    written["seeds"]["1"] = seed
    with pytest.raises(ReportError, match=f"seed 1.*{re.escape(named)}"):
        ResultLine.from_dict(written)


def test_unknown_names_are_refused_when_a_report_is_built():
    with pytest.raises(ReportError, match="fid_score"):
        SeedReport(metrics={"fid_score": 1.0})
    with pytest.raises(ReportError, match=re.escape("['loss']")):
        SeedReport(signals={"loss": 1.0})


def test_the_collector_reads_only_its_reports_and_names_a_broken_line():
    good = [x.to_dict() for x in a_trial()]
    text = "\n".join(json.dumps(x) for x in good)
    ray_only = json.dumps({"trial_id": "t1", "done": True})  # a line of Ray's, no report
    half = json.dumps(good[0])[:40]  # a line being written
    parsed = collect._reports(f"{ray_only}\n{text}\n{json.dumps(good[1])}\n{half}")
    assert [x.report.step for x in parsed] == [0, 10, 20, 30]  # step 10 again counts once
    broken = {k: v for k, v in good[2].items() if k != "node_id"}
    with pytest.raises(ReportError, match=r"result\.json line 2 has no 'node_id'"):
        collect._reports(f"{json.dumps(good[0])}\n{json.dumps(broken)}")


def test_rates_leave_pruned_seeds_out_of_divergence_and_collapse():
    statuses = pd.Series(["completed", "diverged", "pruned", "pruned", "collapsed", "error"])
    r = results.rates(statuses)
    assert (r.diverged, r.collapsed, r.error) == pytest.approx((1 / 3, 1 / 2, 1 / 6))
    assert (r.n_judged, r.n_ended, r.n_seeds, r.n_pruned) == (3, 2, 6, 2)
    assert "of 3 seeds judged" in results.describe_rates(r)
    nothing = results.rates(pd.Series(["pruned"]))
    assert np.isnan(nothing.diverged) and np.isnan(nothing.collapsed)
