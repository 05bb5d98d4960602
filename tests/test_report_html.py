"""The report file: where it is written, that it is self-contained, its sections, bad input."""

import json
import re
import shutil

import pytest
from plotly.offline import get_plotlyjs
from runs import make_run

from analysis import samples
from analysis.aggregate import config_stats
from analysis.report import load_run, report_sections, write_comparison, write_report
from ganlab import results, rundir
from ganlab.results import load, load_samples, sample_trial_ids, write_table

SECTIONS = (
    "summary",
    "effects",
    "convergence",
    "distribution",
    "divergence",
    "modes",
    "precision-recall",
    "importance",
    "parallel",
    "budget",
    "samples",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(
        tmp_path_factory.mktemp("report") / "run",
        n_configs=20,
        seeds=3,
        evals=6,
        with_journal=True,
    )


def test_report_is_written_beside_the_tables_with_every_section(run):
    lines = []
    path = write_report(run, progress=lines.append)
    assert path == run / rundir.REPORT
    page = path.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert page.index('id="summary"') < page.index('id="convergence"')  # the summary leads
    assert "Optuna fANOVA" in page
    assert any(line.startswith("[12/12]") for line in lines)  # the lineage: built, not shown
    assert lines[-1].startswith(f"wrote {path}")
    assert not [p.name for p in run.iterdir() if p.name.startswith(f".{rundir.REPORT}")]


def test_report_works_offline(run):
    page = write_report(run).read_text()
    # plotly.js is inlined exactly once, and nothing else refers to the network (plotly.js
    # itself names a CDN for map topologies, which no figure here uses).
    plotly_js = get_plotlyjs()
    assert page.count(plotly_js) == 1
    rest = page.replace(plotly_js, "")
    assert re.search(r"<script[^>]+src=", rest) is None
    assert "cdn.plot.ly" not in rest
    assert re.search(r"https?://", rest) is None


def test_report_summary_numbers(run):
    page = write_report(run).read_text()
    summary = page.split('<section id="summary">')[1].split("</section>")[0]
    assert "Best configurations" in summary
    assert "extractor=raw" in summary  # the evaluation protocol
    assert "20 (20 configurations, 60 trial × seed rows)" in summary
    # the verdict compares the best with the others that trained as far: all 600 steps
    verdict = r"(No winner: the seeds cannot separate #1 from #\d|The best configuration is)"
    assert re.search(verdict + r"[^<]* Compared at step 600, among configurations trained to "
                     "their end there.", summary)  # fmt: skip
    effects = page.split('<section id="effects">')[1].split("</section>")[0]
    assert "95 % interval" in effects and 'id="fig-effects"' in effects


def test_report_to_another_path_and_without_samples(tmp_path):
    run = make_run(tmp_path / "run", n_configs=6, seeds=2, evals=3, with_samples=False)
    out = write_report(run, out=tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html"
    assert "No samples were saved" in out.read_text()
    assert not (run / rundir.REPORT).exists()


def test_bad_run_directories_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=rundir.TRIALS):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        write_report(tmp_path / "missing")


def test_comparison_warns_about_different_protocols(tmp_path, run):
    other = make_run(tmp_path / "digits", n_configs=8, seeds=3, evals=3, dataset="digits")
    path = write_comparison(run, other, tmp_path / "compare.html")
    page = path.read_text()
    assert "different evaluation protocols" in page
    for figure in ("fig-budget", "fig-objective", "fig-divergence"):
        assert f'id="{figure}"' in page
    same = write_comparison(run, run, tmp_path / "same.html").read_text()
    assert "different evaluation protocols" not in same


def test_fid_floor_is_shown_beside_fid(run):
    loaded = load_run(run)
    protocol = json.dumps({**json.loads(loaded.trials["protocol"].iloc[0]), "fid_floor": 9.63})
    loaded = loaded._replace(trials=loaded.trials.assign(protocol=protocol))
    sections = {s.id: s for s in report_sections(loaded)}
    assert "<th>FID floor</th><td>9.63: the FID of training samples" in sections["summary"].body
    for section in ("convergence", "distribution"):
        assert "Real-data floor: FID 9.63" in sections[section].how


@pytest.mark.parametrize("layout", ["parts", "file"])
def test_the_report_reads_only_the_samples_it_shows(tmp_path, layout):
    run = make_run(tmp_path / "run", n_configs=12, seeds=2, evals=3, dataset="digits")
    everything = load_samples(run)  # as a sweep writes it: one part per trial, real ones apart
    if layout == "file":  # one file, as pandas users may write it
        shutil.rmtree(run / rundir.SAMPLES)
        write_table(everything, run / rundir.SAMPLES)
    trials, _ = load(run)
    assert sample_trial_ids(run) == set(everything.trial_id) - {""}
    shown = {s.config_id for s in samples.get_samples_info(
        everything, trials, config_stats(trials), []).sets}  # fmt: skip
    assert len(shown) == 6  # the 3 best and 3 worst of 12

    read = load_run(run).samples
    fake = read[read.source == "fake"]
    assert set(fake.config_id) == shown
    assert set(fake.trial_id) == set(trials.trial_id[trials.config_id.isin(shown)])
    expected = everything[(everything.source == "fake") & everything.config_id.isin(shown)]
    assert sorted(fake.trial_id + fake.seed.astype(str)) == sorted(
        expected.trial_id + expected.seed.astype(str))  # fmt: skip
    assert (read.source == "real").sum() == 1


def test_the_summary_counts_running_seeds_and_any_status_it_does_not_know(tmp_path):
    run = make_run(tmp_path / "run", n_configs=4, seeds=2, evals=3)
    trials = load(run)[0]
    trials.loc[:2, "status"] = "running"  # a sweep collected while it runs
    trials.loc[3, "status"] = "mislaid"  # a status of a later version of ganlab
    shutil.rmtree(run / rundir.TRIALS)
    write_table(trials, run / rundir.TRIALS)
    summary = write_report(run).read_text().split('<section id="summary">')[1]
    counts = summary.split("seeds by status")[1].split("</tr>")[0]
    assert "3 running" in counts and "1 mislaid" in counts
    assert f"{(trials.status == 'completed').sum()} completed" in counts


def test_the_cli_and_the_report_rank_the_same_configurations_in_the_same_order(run):
    # `ganlab results` prints `results.summarise`; the report's table is its `config_stats`
    trials, _ = load(run)
    cli = list(results.summarise(trials)["config_id"])
    assert cli == list(config_stats(trials).index) == list(load_run(run).stats.index)
    page = write_report(run).read_text().split('<section id="summary">')[1]
    shown = re.findall(r'<tr title="config ([0-9a-f]+)">', page.split("</section>")[0])
    assert shown == cli[:10]
    assert trials.status.eq("pruned").any()  # ASHA stopped some: ranking has budgets to order


def test_fields_that_do_not_apply_are_blank(run):
    trials, _ = load(run)
    assert trials.loc[trials.loss != "wasserstein", "clip"].isna().all()
    assert trials.loc[trials.loss == "wasserstein", "clip"].gt(0).all()
    assert trials.loc[trials.penalty == "none", "penalty_weight"].isna().all()
    page = write_report(run).read_text()
    summary = page.split('<section id="summary">')[1].split("</section>")[0]
    clips = re.findall(r'<td class="col-clip"[^>]*>([^<]*)</td>', summary)
    assert clips and "0" not in clips and "—" in clips
