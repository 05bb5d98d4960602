"""The command line: `ganlab trial`, `ganlab results` and `ganlab report` as users call them."""

import pandas as pd
import pytest
from runs import make_run

from ganlab import results, rundir
from ganlab.cli import main


def test_trial_shows_progress_and_a_summary_per_seed(capsys):
    code = main(["trial", "--steps", "20", "--eval-every", "10", "--width", "16", "--seeds",
                 "3,4", "--n-eval", "100", "--lr-g", "5e-4"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    progress = [line for line in out.splitlines() if line.startswith("step")]
    assert [line.split()[1] for line in progress] == ["0", "10", "20"]
    table = [line.split() for line in out.splitlines() if line.strip()]
    rows = {cells[0]: cells for cells in table if cells[0] in ("3", "4")}
    assert set(rows) == {"3", "4"} and all(r[2] == "20" for r in rows.values())
    assert "objective (good_modes, median over seeds)" in out  # ring8's own objective


def test_trial_reads_a_yaml_file_and_flags_override_it(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("steps: 1000\neval_every: 5\nwidth: 8\nseeds: [0]\nn_eval: 50\n")
    assert main(["trial", "--config", str(path), "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "seeds [0], 5 steps" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["trial", "--loss", "hinged"], "loss: 'hinged' is not one of"),
        (["trial", "--lr-g", "fast"], "lr_g: expected float, got 'fast'"),
        (["trial", "--steps", "0"], "steps: must be at least 1"),
    ],
)
def test_trial_rejects_bad_flags_with_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_results_prints_the_best_configurations_and_filters(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_configs=6, seeds=2, evals=4)
    trials, _ = results.load(run)
    assert main(["results", str(run), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 3  # header and three configurations
    best = results.summarise(trials).iloc[0]
    assert lines[1].split()[0] == best.trial_id
    loss = trials.loss.iloc[0]
    assert (
        main(["results", str(run), "--seeds", "--where", f"loss == '{loss}'", "--top", "99"]) == 0
    )
    shown = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(shown) == (trials.loss == loss).sum()


def test_results_rejects_a_bad_query_and_a_missing_run(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_configs=2, seeds=2, evals=2)
    assert main(["results", str(run), "--where", "los == 1"]) == 2
    assert "--where 'los == 1'" in capsys.readouterr().err
    assert main(["results", str(tmp_path / "nothing")]) == 2
    assert "no trials.parquet" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("__import__('os').system('touch {marker}') == 0", "function calls not allowed"),
        ("loss.str.len() > 0", "function calls not allowed"),
        ("@marker == 1", "not an expression"),
        ("loss == 'hinge' and lr_d.__class__ == 1", "`lr_d.__class__` not allowed"),
    ],
)
def test_results_where_cannot_run_code(tmp_path, capsys, where, message):
    run = make_run(tmp_path / "run", n_configs=2, seeds=2, evals=2)
    marker = tmp_path / "ran"
    assert main(["results", str(run), "--where", where.format(marker=marker)]) == 2
    assert message in capsys.readouterr().err
    assert not marker.exists()


def test_results_where_selects_with_comparisons_lists_and_booleans(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_configs=6, seeds=2, evals=2)
    trials, _ = results.load(run)
    losses = sorted(trials.loss.unique())[:2]
    where = f"loss in {losses} and not (seed == 1) and 1e-6 < lr_d <= 1"
    assert main(["results", str(run), "--seeds", "--where", where, "--top", "99"]) == 0
    shown = capsys.readouterr().out.strip().splitlines()[1:]
    expected = trials[trials.loss.isin(losses) & (trials.seed == 0)]
    assert len(shown) == len(expected) > 0


def test_report_writes_html_beside_the_tables(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_configs=4, seeds=2, evals=3)
    assert main(["report", str(run)]) == 0
    html = (run / rundir.REPORT).read_text()
    assert html.count("plotly-graph-div") >= 8 and "<script src=" not in html  # offline
    assert pd.read_parquet(run / rundir.TRIALS).shape[0] == 8  # the tables are untouched


def test_trial_refuses_what_cannot_fit_this_machine_before_allocating_it(capsys, monkeypatch):
    from ganlab import budget

    monkeypatch.setattr(budget, "machine_memory", lambda: 2**29)
    wide = ["trial", "--width", "4096", "--depth", "2", "--steps", "2"]
    assert main(wide) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the trial started
    assert captured.err.startswith("ganlab trial: error: width: a trial of width 4,096 needs at "
                                   "least 2.69 GiB (networks 2.64 GiB: 3 seeds × 900 MiB of "
                                   "weights, gradients, Adam moments; a training")  # fmt: skip
    assert captured.err.endswith("more than this machine's memory (512 MiB); make width "
                                 "smaller\n")  # fmt: skip
    monkeypatch.setattr(budget, "machine_memory", lambda: 2**30)  # one seed's networks fit
    assert main(wide) == 2
    assert capsys.readouterr().err.startswith("ganlab trial: error: seeds: a trial of 3 seeds ")
    assert main(["trial", "--width", "64", "--steps", "2", "--n-eval", "50"]) == 0  # fits


def test_trial_refuses_seeds_a_generator_or_the_tables_cannot_take(capsys):
    assert main(["trial", "--seeds", "1,9223372036854775807", "--steps", "2"]) == 2
    assert "seeds: each seed must be in [0, 9223372036853775805)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("not " * 2400 + "seed", "nested more than 50 deep"),  # Python's parser would recurse
        ("-" * 3000 + "seed == 1", "nested more than 50 deep"),
        ("-" * 60 + "seed == 1", "nested more than 50 deep"),  # parses; the evaluator recurses
        ("'a' * 300000000 == loss", "`*` multiplies numbers and numeric columns only"),
        ("loss * 100000000 == 'a'", "`*` multiplies numbers and numeric columns only"),
        ("seed == 1 or " * 1000 + "seed == 0", "13,009 characters; at most 10,000"),
    ],
    ids=["not", "minus", "minus past our depth", "string repeated", "column repeated", "long"],
)
def test_results_where_cannot_take_the_stack_or_the_memory(tmp_path, capsys, where, message):
    run = make_run(tmp_path / "run", n_configs=2, seeds=2, evals=2)
    assert main(["results", str(run), "--where", where]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ganlab results: error: --where ") and message in line
    assert len(line) < 12_000  # a long expression is shown cut


def test_results_where_still_multiplies_numbers(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_configs=4, seeds=2, evals=2)
    trials, _ = results.load(run)
    where = "lr_d * 2 * 1 < 2 * 1e-3 and seed * 1 == 0"
    assert main(["results", str(run), "--seeds", "--where", where, "--top", "99"]) == 0
    shown = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(shown) == ((trials.lr_d < 1e-3) & (trials.seed == 0)).sum() > 0
