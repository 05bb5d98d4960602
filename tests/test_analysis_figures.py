"""Each figure's data against hand-computed values, and each drawing function's figure."""

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image
from runs import make_run, metric_table, trial_table

from analysis import convergence, distributions, modes, samples, search, stability
from analysis.aggregate import budget_curves, config_stats, param_importance
from ganlab.results import load, load_samples


def _config(trial_id, loss, lr_g, fids, statuses, objective, **more):
    return [
        {
            "trial_id": trial_id,
            "seed": s,
            "loss": loss,
            "lr_g": lr_g,
            "final_fid": f,
            "status": st,
            "objective": objective,
            "div_rate": statuses.count("diverged") / 3,
            **{k: v[s] for k, v in more.items()},
        }
        for s, (f, st) in enumerate(zip(fids, statuses, strict=True))
    ]


@pytest.fixture
def hand():
    ok = ["completed"] * 3
    trials = trial_table(
        _config(
            "x",
            "hinge",
            1e-4,
            [4, 6, 8],
            ["completed", "completed", "diverged"],
            6.0,
            final_modes=[8, 6, 0],
            final_precision=[0.9, 0.7, 0.0],
            final_recall=[0.8, 0.6, 0.0],
        )
        + _config(
            "y",
            "minimax",
            1e-3,
            [9, 10, 11],
            ok,
            10.0,
            final_modes=[1, 2, 3],
            final_precision=[0.5, 0.6, 0.7],
            final_recall=[0.1, 0.2, 0.3],
        )
        + _config(
            "z",
            "minimax",
            1e-4,
            [1e5, 1e5, 7],
            ["diverged", "diverged", "completed"],
            1e5,
            final_modes=[0, 0, 4],
            final_precision=[0, 0, 0.4],
            final_recall=[0, 0, 0.4],
        )
    )
    ids = trials.drop_duplicates("trial_id").set_index("trial_id")["config_id"]
    # Trial x: fid per seed at steps 100 and 200; seed 2 diverges at step 200 (NaN).
    fid = {0: [4.0, 2.0], 1: [6.0, 3.0], 2: [8.0, np.nan]}
    metrics = metric_table(
        [
            {
                "trial_id": "x",
                "config_id": ids["x"],
                "seed": seed,
                "step": step,
                "fid": values[k],
                "loss_d": 0.5 + seed,
                "loss_g": 1.0,
                "diverged": bool(np.isnan(values[k])),
            }
            for seed, values in fid.items()
            for k, step in enumerate((100, 200))
        ]
    )
    return trials, metrics, ids


def test_convergence_median_and_iqr_per_step(hand):
    trials, metrics, ids = hand
    stats = config_stats(trials)
    info = convergence.get_convergence_info(metrics, stats, ["loss"], "fid")
    assert info.signals == ["fid", "loss_d", "loss_g"]
    fid = info.curves[(info.curves["config_id"] == ids["x"]) & (info.curves["signal"] == "fid")]
    fid = fid.set_index("step")
    assert fid.loc[100, ["q25", "median", "q75"]].tolist() == pytest.approx([5.0, 6.0, 7.0])
    # The diverged seed's NaN is left out: quartiles of 2 and 3.
    assert fid.loc[200, ["q25", "median", "q75"]].tolist() == pytest.approx([2.25, 2.5, 2.75])
    loss_d = info.curves[info.curves["signal"] == "loss_d"].set_index("step")
    assert loss_d.loc[100, "median"] == pytest.approx(1.5)
    fig = convergence.plot_convergence(info)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2 * 3  # one configuration with metrics: band + median per panel
    assert sum(bool(t.showlegend) for t in fig.data) == 1
    # D's and G's losses in a column per loss function of the drawn configurations (x's)
    assert [a.text for a in fig.layout.annotations] == ["fid", "loss_d · hinge", "loss_g · hinge"]
    (legend,) = [t.name for t in fig.data if t.showlegend]
    assert legend == "#1 loss=hinge · 2,000 steps: 2 completed, 1 diverged"


def test_convergence_cap_keeps_the_best():
    stats = pd.DataFrame(
        {"rank": range(1, 21), "objective": np.arange(20.0)}, index=[f"c{i}" for i in range(20)]
    )
    chosen = convergence.select_configs(stats, set(stats.index) - {"c1"}, best=3, worst=2)
    assert list(chosen.index) == ["c0", "c2", "c3", "c18", "c19"]
    assert list(chosen["group"]) == ["best"] * 3 + ["worst"] * 2
    steps = convergence.thin_steps(np.arange(1, 251), 100)
    assert len(steps) == 100
    assert (steps[0], steps[-1]) == (1, 250)
    assert list(convergence.thin_steps(np.array([3, 1, 2, 3]), 100)) == [1, 2, 3]


def test_distribution_orders_groups_and_separates_penalised_trials(hand):
    trials, _, _ = hand
    info = distributions.get_distribution_info(trials, "fid", "min")
    assert info.groupings == ["loss"]  # arch and penalty do not vary
    assert info.orders["loss"] == ["hinge", "minimax"]  # medians 6 and (10 + 1e5) / 2
    assert info.trials.set_index("trial_id")["penalised"].to_dict() == {
        "x": False,
        "y": False,
        "z": True,
    }
    fig = distributions.plot_distribution(info)
    boxes = [t for t in fig.data if t.type == "box"]
    crosses = [t for t in fig.data if t.type == "scatter"]
    assert [list(b.y) for b in boxes] == [[6.0], [10.0]]
    assert len(crosses) == 1
    assert list(crosses[0].y) == [1e5]


def test_divergence_figure(hand):
    trials, _, _ = hand
    info = stability.get_divergence_info(trials, lr="lr_g")
    assert info.rate.loc["minimax", "0.0001"] == pytest.approx(2 / 3)
    fig = stability.plot_divergence(info)
    assert fig.data[0].type == "heatmap"
    assert fig.data[0].text[list(info.rate.index).index("minimax")][0] == "67%<br>n=3"


def test_mode_heatmap_means_over_seeds_that_did_not_diverge(hand):
    trials, _, _ = hand
    info = modes.get_mode_heatmap_info(trials, ["loss", "lr_g"])
    assert (info.x, info.y) == ("loss", "lr_g")
    assert (info.x_labels, info.y_labels) == (["hinge", "minimax"], ["0.0001", "0.001"])
    # Cell (lr_g 1e-4, hinge): seeds 8 and 6 (the diverged seed's 0 is left out).
    assert info.values["modes"][0, 0] == pytest.approx(7.0)
    assert info.values["modes"][0, 1] == pytest.approx(4.0)  # z: its one seed that ran
    assert info.values["modes"][1, 1] == pytest.approx(2.0)  # y: mean of 1, 2, 3
    assert np.isnan(info.values["modes"][1, 0])
    assert info.seeds.tolist() == [[2, 1], [0, 3]]
    assert len(modes.plot_mode_heatmap(info).data) == 1  # hq is all NaN in this table
    per_loss = modes.get_modes_per_loss_info(trials)
    assert per_loss.order == ["hinge", "minimax"]
    assert len(per_loss.seeds) == 6
    assert isinstance(modes.plot_modes_per_loss(per_loss), go.Figure)


def test_no_modes_gives_a_note_not_an_error(hand):
    trials, _, _ = hand
    trials = trials.assign(final_modes=np.nan, final_hq=np.nan)
    assert modes.get_mode_heatmap_info(trials, ["loss"]) is None
    fig = modes.plot_mode_heatmap(None)
    assert "no modes" in fig.layout.annotations[0].text


def test_precision_recall_points_are_median_over_seeds(hand):
    trials, _, _ = hand
    stats = config_stats(trials)
    info = modes.get_precision_recall_info(stats, ["loss"], "fid")
    points = info.points.set_index("rank")
    assert points.loc[1, ["precision_median", "recall_median"]].tolist() == pytest.approx(
        [0.8, 0.7]
    )
    assert points.loc[2, ["precision_median", "recall_median"]].tolist() == pytest.approx(
        [0.6, 0.2]
    )
    fig = modes.plot_precision_recall(info)
    assert sorted(t.name for t in fig.data) == ["hinge", "minimax"]


def test_parallel_coordinates_dimensions(tmp_path):
    run = make_run(tmp_path / "run", n_configs=20, seeds=3, evals=3)
    trials, _ = load(run)
    info = search.get_parallel_info(trials, ["lr_d", "loss"], "fid", "min")
    labels = [d["label"] for d in info.dimensions]
    assert labels[:2] == ["log10 lr_d", "loss"]  # importance order, lr on a log scale
    assert labels[-1] == "objective: log10 fid"  # spans decades: the penalty is 1e5
    loss = info.dimensions[1]
    assert loss["ticktext"] == sorted(trials["loss"].unique())
    objective = info.dimensions[-1]["values"]
    assert objective[-1] == pytest.approx(np.log10(trials["objective"].min()))  # best on top
    assert info.reverse
    assert isinstance(search.plot_parallel(info), go.Figure)


def test_budget_and_importance_figures(tmp_path):
    run = make_run(tmp_path / "run", n_configs=20, seeds=3, evals=3)
    trials, _ = load(run)
    info = search.BudgetInfo(budget_curves(trials), "fid", "min")
    fig = search.plot_budget(info)
    lines = [t for t in fig.data if t.fill is None]  # a curve of one trial is one marker
    assert len(lines) == len(info.curves)
    assert lines[0].name.startswith("all trials")
    importance = param_importance(trials, run)
    bars = search.plot_importance(importance).data[0]
    assert list(bars.y)[::-1] == importance.params


def test_png_encoder_round_trips_through_pillow():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 3, 3), dtype=np.uint8)
    for pixels, mode in ((grey, "L"), (rgb, "RGB")):
        image = Image.open(io.BytesIO(samples.png_bytes(pixels)))
        image.load()
        assert image.mode == mode
        assert np.array_equal(np.asarray(image), pixels)


def test_image_grid_layout_and_scale():
    images = np.zeros((10, 1, 8, 8), np.float32)
    images[0] = -1.0
    images[1] = 1.0
    grid = samples.image_grid(images, columns=8, pad=1)
    assert grid.shape == (2 * 9 + 1, 8 * 9 + 1)  # two rows of eight, one-pixel borders
    assert grid[1, 1] == 0 and grid[1, 10] == 255 and grid[1, 19] == 128
    assert grid[0, 0] == 255  # border
    rgb = samples.image_grid(np.zeros((2, 3, 4, 4), np.float32))
    assert rgb.shape == (6, 11, 3)


def test_samples_of_best_and_worst(tmp_path):
    run = make_run(tmp_path / "run", n_configs=12, seeds=3, evals=3, dataset="digits")
    trials, _ = load(run)
    table = load_samples(run)
    stats = config_stats(trials)
    info = samples.get_samples_info(table, trials, stats, ["loss"], per_group=2)
    saved = stats[stats.index.isin(set(table["config_id"]))]
    assert [s.config_id for s in info.sets] == list(saved.index[:2]) + list(saved.index[-2:])
    assert [s.group for s in info.sets] == ["best", "best", "worst", "worst"]
    assert info.sets[0].kind == "images"
    assert info.sets[0].seeds[0].values.shape == (64, 1, 8, 8)
    assert info.real["digits"].shape[1:] == (1, 8, 8)
    page = samples.sample_grids_html(info)
    assert page.count('class="sample-grid"') == 1 + sum(len(s.seeds) for s in info.sets)
    for s in info.sets:  # every panel says the step it was drawn at and how its seeds ended
        steps = trials.loc[trials.config_id == s.config_id, "steps_done"].max()
        assert s.step == steps
        statuses = stats.loc[s.config_id, "statuses"]
        assert f"<h3>{s.group} #{s.rank} · step {steps:,} · {statuses}" in page


def test_sample_points_figure(tmp_path):
    run = make_run(tmp_path / "run", n_configs=12, seeds=3, evals=3, dataset="ring8")
    trials, _ = load(run)
    stats = config_stats(trials)
    info = samples.get_samples_info(load_samples(run), trials, stats, ["loss"])
    assert {s.kind for s in info.sets} == {"points"}
    fig = samples.plot_sample_points(info)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [f"{s.title}<br>{s.label}" for s in info.sets]
    assert all(" · step " in t for t in titles)
    names = {t.name for t in fig.data}
    assert "real data" in names and "seed 0" in names
    assert samples.sample_grids_html(info) == ""
