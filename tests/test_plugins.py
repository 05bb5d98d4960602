"""Plugins (`imports:`): the example plugin through real Ray, locally and on a two-node cluster,
its metric in the tables (read back where the plugin is not imported); plugins that cannot be
imported or name a typo; a worker's configuration error in the tables, not retried; `--resume`
and a plugin whose code changed; the `ganlab.register` API's checks; plugin metrics measured by
the evaluator, as the objective, and in tables written and read directly.

A plugin registers names for the whole process, so every sweep here runs as `ganlab` does, in
a subprocess of its own; the API's own tests put the registries back afterwards.
"""

import json
import math
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from ganlab import data, losses, metrics, models, penalties, plugins, register, results, rundir
from ganlab import spec as sweep_spec
from ganlab.config import ConfigError, TrialConfig
from ganlab.metrics import Evaluator
from ganlab.spec import SpecError

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "plugin_sweep.yaml"
PLUGIN = ROOT / "examples" / "tiny_gans"
TIMEOUT_S = 300


def ganlab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganlab.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def example_hash() -> str:
    return f"tiny_gans={plugins.source_hash(PLUGIN)[: plugins.HASH_SHOWN]}"


def check_example_tables(run_dir: Path) -> None:
    trials, metrics = results.load(run_dir)
    assert len(trials) == 2 * 2 and len(metrics) > 0  # --smoke: 2 trials × 2 seeds
    assert set(trials.status) <= {"completed", "collapsed"}
    assert set(trials.plugins) == {example_hash()}  # every row names the code that made it
    assert set(trials.dataset) == {"png-shapes"}
    assert set(trials.arch) <= {"mapping-mlp", "mlp"} and set(trials.loss) <= {
        "smooth-non-saturating", "non-saturating"}  # fmt: skip


# Run where the plugin is imported: the example's `memorised` of each trial's last samples
# (sample_keep = n_eval: the very fakes its last evaluation measured), by trial and seed.
RECOMPUTED = """
import json, sys
from pathlib import Path
import torch
from ganlab import data, plugins, rundir
plugins.load([sys.argv[1]], Path("."))
import tiny_gans
shapes = data.load("png-shapes")
found = {}
for trial in Path(sys.argv[2]).glob("trial_*"):
    last = max(trial.glob("checkpoint_*"), key=lambda p: rundir.checkpoint_number(p.name))
    samples = torch.load(last / rundir.SAMPLES_FILE, weights_only=True)
    found[rundir.trial_id_of(trial.name)] = {
        str(seed): tiny_gans.memorised(x, None, shapes).item() for seed, x in samples.items()}
print(json.dumps(found))
"""
# Run where it is not: the tables read back with the plugin's columns all the same, and the
# report's per-seed objectives and per-configuration quantiles taken of it (direction, worst).
FRESH = """
import json, sys
from analysis.aggregate import config_stats
from analysis.effects import seed_outcomes
from ganlab import results
trials, metrics = results.load(sys.argv[1])
columns = {"memorised": metrics, "final_memorised": trials, "best_memorised": trials}
found = {name: [str(table[name].dtype), table[name].tolist()] for name, table in columns.items()}
found["objective"] = seed_outcomes(trials, "memorised")["objective"].tolist()
found["median"] = config_stats(trials).set_index("n_seeds")["memorised_median"].tolist()
assert not [name for name in sys.modules if name.split(".")[0] == "tiny_gans"]
print(json.dumps(found))
"""


def check_example_metric(run_dir: Path) -> None:
    """The example plugin's metric `memorised`: float64 columns of the tables, of finite shares,
    each seed's final value the metric of its last samples; read back by a process that never
    imports the plugin."""
    trials, metric_rows = results.load(run_dir)
    assert metric_rows["memorised"].dtype == trials["final_memorised"].dtype == "float64"
    values = metric_rows["memorised"]
    assert values.between(0, 1).all() and len(values) == len(metric_rows)  # finite, no blank
    last = metric_rows[metric_rows.step == metric_rows.step.max()]
    final = trials.set_index(["trial_id", "seed"])["final_memorised"]
    assert final.to_dict() == last.set_index(["trial_id", "seed"])["memorised"].to_dict()
    done = subprocess.run([sys.executable, "-c", RECOMPUTED, f"{PLUGIN}/", str(run_dir / "tune")],
                          capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    recomputed = json.loads(done.stdout)
    for (trial_id, seed), value in final.items():
        assert value == pytest.approx(recomputed[trial_id][str(seed)])
    done = subprocess.run([sys.executable, "-c", FRESH, str(run_dir)], capture_output=True,
                          text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout)
    assert fresh["memorised"] == ["float64", values.tolist()]
    assert fresh["final_memorised"] == ["float64", trials["final_memorised"].tolist()]
    assert fresh["best_memorised"][0] == "float64"
    assert fresh["objective"] == pytest.approx(trials["final_memorised"].tolist())  # none diverged
    medians = trials.groupby("config_id", sort=False)["final_memorised"].median()
    assert sorted(fresh["median"]) == pytest.approx(sorted(medians))


# --- through real Ray ---------------------------------------------------------------------------


def test_the_example_plugin_sweep_runs_at_smoke_size_on_local_ray(tmp_path):
    done = ganlab("sweep", str(EXAMPLE), "--smoke", "--storage", str(tmp_path / "runs"),
                  "--no-report", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    check_example_tables(tmp_path / "runs" / "plugin_sweep-smoke")
    check_example_metric(tmp_path / "runs" / "plugin_sweep-smoke")


REFUSING = """
from ganlab import register
from ganlab.config import ConfigError


@register.loss("pairs-only")  # a check only the worker makes, when the loss is first called
def pairs_only(d_real, d_fake):
    raise ConfigError("loss", "pairs-only: this build refuses to train")
"""
REFUSED_SWEEP = """
name: refused
imports: [refusing.py]
base: {dataset: ring8, loss: pairs-only, width: 8, steps: 4, eval_every: 2, n_eval: 50,
       batch_size: 8}
seeds: 1
num_samples: 1
max_failures: 2
scheduler: {name: none}
objective: {metric: fid, mode: min}
"""


def test_a_workers_config_error_reaches_the_tables_as_its_message_without_retries(tmp_path):
    (tmp_path / "refusing.py").write_text(REFUSING)
    (tmp_path / "refused.yaml").write_text(REFUSED_SWEEP)
    run = ("sweep", "refused.yaml", "--storage", str(tmp_path / "runs"), "--no-report")
    done = ganlab(*run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-5000:]
    trials, _ = results.load(tmp_path / "runs" / "refused")
    assert list(trials.status) == ["error"]
    message = "ganlab.config.ConfigError: loss: pairs-only: this build refuses to train"
    assert list(trials.error) == [message]
    (error_file,) = (tmp_path / "runs" / "refused").rglob("error.txt")
    assert error_file.read_text().count("Failure #") == 1  # max_failures 2, yet no retry

    # The plugin changes: --resume refuses it, naming the module and both hashes.
    before = plugins.source_hash(tmp_path / "refusing.py")
    with (tmp_path / "refusing.py").open("a") as f:
        f.write("# changed\n")
    after = plugins.source_hash(tmp_path / "refusing.py")
    refused = ganlab(*run, "--resume", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-5000:]
    line = last_line(refused)
    assert line.startswith("ganlab sweep: error: refused.yaml: imports: --resume runs the code")
    assert f"refusing was {before[:16]}, now {after[:16]}" in line
    assert "--allow-changed-plugins" in line
    alone = ganlab(*run[:2], "--allow-changed-plugins", cwd=tmp_path)
    assert alone.returncode == 2 and "goes with --resume only" in last_line(alone)


# --- bad plugins, before any work -----------------------------------------------------------


def write_sweep(tmp_path: Path, imports: str, base: str = "dataset: ring8") -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(f"name: mine\nimports: {imports}\nbase: {{{base}}}\n"
                    "objective: {metric: fid, mode: min}\n")  # fmt: skip
    return path


def refused(tmp_path: Path, path: Path) -> str:
    done = ganlab("sweep", str(path), "--storage", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-5000:]
    assert not (tmp_path / "runs").exists()  # nothing written
    return last_line(done)


def test_a_typo_in_a_plugins_name_exits_2_listing_the_plugins_names(tmp_path):
    path = write_sweep(tmp_path, f"[{PLUGIN}/]", "dataset: png-shapes, arch: mapping-mpl")
    line = refused(tmp_path, path)
    assert line.startswith(f"ganlab sweep: error: {path}: base.arch: 'mapping-mpl' is not one")
    assert "mapping-mlp" in line and "dcgan" in line


def test_a_plugin_with_a_syntax_error_exits_2_naming_its_file_and_line(tmp_path):
    (tmp_path / "broken.py").write_text("from ganlab import register\n\ndef f(:\n    pass\n")
    line = refused(tmp_path, write_sweep(tmp_path, "[broken.py]"))
    where = f"{tmp_path / 'broken.py'}, line 3"
    assert line == (f"ganlab sweep: error: {tmp_path / 'mine.yaml'}: imports: broken.py: "
                    f"{where}: SyntaxError: invalid syntax")  # fmt: skip


def test_a_plugin_that_fails_when_imported_exits_2_naming_its_file_and_line(tmp_path):
    (tmp_path / "wrong.py").write_text(
        "from ganlab import register\n\n\n@register.loss('one-sided')\ndef f(d_real):\n"
        "    return d_real, d_real\n"
    )
    line = refused(tmp_path, write_sweep(tmp_path, "[wrong.py]"))
    assert f"imports: wrong.py: {tmp_path / 'wrong.py'}, line 4: PluginError: loss " in line
    assert "f(d_real) cannot be called as fn(d_real, d_fake)" in line


@pytest.mark.parametrize(
    "imports,said",
    [("[missing.py]", "missing.py: no such file or directory"),
     ("[no_such_module_anywhere]", "no module 'no_such_module_anywhere'"),
     ("plugin.py", "must be a list of files")],
)  # fmt: skip
def test_a_plugin_that_is_not_there_exits_2(tmp_path, imports, said):
    assert said in refused(tmp_path, write_sweep(tmp_path, imports))


def test_ganlab_trial_takes_imports(tmp_path):
    done = ganlab("trial", "--imports", f"{PLUGIN}/", "--dataset", "png-shapes", "--arch",
                  "mapping-mlp", "--loss", "smooth-non-saturating", "--steps", "4",
                  "--eval-every", "2", "--seeds", "0", "--n-eval", "50", "--width", "8",
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    assert "trial: png-shapes / mapping-mlp / smooth-non-saturating / none" in done.stdout
    typo = ganlab("trial", "--imports", "nope.py", cwd=tmp_path)
    assert typo.returncode == 2 and "--imports: nope.py: no such file" in last_line(typo)


# --- the API, in this process ---------------------------------------------------------------


@pytest.fixture
def registries():
    """Every registry as it was, after the test."""
    from ganlab.batched import BATCHED_PENALTIES

    every = (losses.LOSSES, penalties.PENALTIES, BATCHED_PENALTIES, models.ARCHITECTURES,
             models.SHAPE_PROBLEMS, data.DATASETS, metrics.METRICS)  # fmt: skip
    kept = [(registry, dict(registry)) for registry in every]
    yield
    for registry, before in kept:
        registry.clear()
        registry.update(before)


def test_config_errors_pickle_whole():
    for error in (ConfigError("loss", "bad"), SpecError("a.yaml", "base.loss", "bad")):
        back = pickle.loads(pickle.dumps(error))
        assert (type(back), str(back), back.message) == (type(error), str(error), error.message)


def test_a_plugin_architecture_declares_the_shapes_it_models(registries):
    @register.architecture("flat-only", lambda shape: None if len(shape) == 1 else "needs flat")
    def flat_only(cfg, shape):
        return models.ARCHITECTURES["mlp"](cfg, shape)

    assert TrialConfig.from_dict({"arch": "flat-only", "dataset": "ring8"}).arch == "flat-only"
    with pytest.raises(ConfigError, match=r"architecture 'flat-only' needs flat; got data of "
                       r"shape \(1, 8, 8\) \(dataset 'digits'\)"):  # fmt: skip
        TrialConfig.from_dict({"arch": "flat-only", "dataset": "digits", "metric": "fid"})


def test_a_name_twice_or_a_bad_name_is_refused(registries):
    with pytest.raises(ValueError, match="'hinge' is already registered"):
        register.loss("hinge")(losses.hinge)
    with pytest.raises(register.PluginError, match=r"must start with a letter"):
        register.penalty("r1+r2")


def test_a_plugin_penalty_without_a_batched_form_trains_sequentially(registries):
    @register.penalty("zero")
    def zero(d, real, fake, generator):
        return real.new_zeros(())

    config = TrialConfig.from_dict({"penalty": "r1+zero", "seeds": [0, 1]})
    from ganlab import execution

    assert execution.choose(config, torch.device("cpu")) == "sequential"
    with pytest.raises(ConfigError, match="execution: 'batched' needs a batched form"):
        config.replace(execution="batched")


def test_a_dataset_reader_must_return_data_fields(registries):
    @register.dataset("bad-fields", shape=(2,), modes=0, extractor="raw", n_eval=100)
    def bad(data_dir, download):
        return {"train": torch.zeros(4, 2), "labels": None}

    with pytest.raises(register.PluginError, match=r"unknown field\(s\) \['labels'\]"):
        data.load("bad-fields")

    @register.dataset("bad-shape", shape=(3,), modes=0, extractor="raw", n_eval=100)
    def shape(data_dir, download):
        return {"train": torch.zeros(4, 2), "test": torch.zeros(4, 2)}

    with pytest.raises(register.PluginError, match=r"train has samples of shape \(2,\), "
                       r"registered as \(3,\)"):  # fmt: skip
        data.load("bad-shape")


def test_the_example_png_folder_is_what_make_shapes_draws(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import make_shapes
    finally:
        sys.path.remove(str(ROOT / "examples"))
    drawn = make_shapes.shapes()
    assert len({image.tobytes() for image in drawn.values()}) == len(drawn)  # no image twice
    files = sorted((PLUGIN / "shapes").glob("*.png"))
    assert sorted(f.stem for f in files) == sorted(drawn)
    from PIL import Image

    for file in files:
        assert (torch.tensor(list(Image.open(file).getdata())).view(8, 8).numpy()
                == drawn[file.stem]).all()  # fmt: skip
    copied = tmp_path / "copy"
    shutil.copytree(PLUGIN, copied, ignore=shutil.ignore_patterns("__pycache__"))
    assert plugins.source_hash(copied) == plugins.source_hash(PLUGIN)  # where it lies: no matter
    assert re.fullmatch(r"[0-9a-f]{64}", plugins.source_hash(PLUGIN))


# --- plugin metrics -----------------------------------------------------------------------------


@pytest.fixture
def forget(registries):
    """Plugin modules the test names, forgotten afterwards with what they registered: imported
    again, they register their names again."""
    names: list[str] = []
    yield names
    for name in [n for n in sys.modules if n.split(".")[0] in names]:
        del sys.modules[name]


def ring_evaluator() -> Evaluator:
    return Evaluator(data.load("ring8"), n_eval=100)


def fakes(seed: int = 0) -> torch.Tensor:
    return torch.randn(100, 2, generator=torch.Generator().manual_seed(seed))


def test_a_plugin_metric_is_measured_after_the_built_ins_on_the_fakes_and_features(registries):
    built_in = ring_evaluator().metrics
    seen = {}

    @register.metric("spread", mode="max", worst=-1.0, doc="mean distance from the origin")
    def spread(fake, features, data):
        seen.update(features=features, data=data)
        return fake.norm(dim=1).mean()

    evaluator = ring_evaluator()
    assert evaluator.metrics == (*built_in, "spread")
    fake = fakes()
    values = evaluator(fake)
    assert list(values)[-1] == "spread"
    assert values["spread"] == pytest.approx(fake.norm(dim=1).mean().item())
    assert torch.equal(seen["features"], evaluator.extractor(fake).features)  # raw: the points
    assert seen["data"] is evaluator.data
    (seeds,) = evaluator.evaluate_seeds([fake])
    assert seeds["spread"] == pytest.approx(values["spread"])
    assert metrics.METRICS["spread"].doc == "mean distance from the origin"


def test_a_non_finite_plugin_value_counts_as_its_worst_and_the_built_ins_stay(registries):
    @register.metric("never", mode="min", worst=7.5)
    def never(fake, features, data):
        """Not a number, ever."""
        return fake.new_tensor(math.nan)

    @register.metric("endless", mode="max", worst=-2.0)
    def endless(fake, features, data):
        return fake.new_tensor(math.inf).double()

    evaluator = ring_evaluator()
    fake = fakes()
    values = evaluator(fake)
    assert (values["never"], values["endless"]) == (7.5, -2.0)
    assert math.isfinite(values["fid"]) and values["fid"] < 1e5  # the rest measured as ever
    assert metrics.METRICS["never"].doc == "Not a number, ever."  # doc: the docstring's line
    fake[0, 0] = math.nan  # samples not finite: every metric at its worst, the plugin's too
    assert evaluator(fake) == evaluator.worst() and evaluator.worst()["never"] == 7.5


def test_a_plugin_metric_that_raises_fails_the_trial_naming_it(registries):
    @register.metric("broken", mode="min", worst=1.0)
    def broken(fake, features, data):
        return 1 / 0

    @register.metric("many", mode="min", worst=1.0)
    def many(fake, features, data):
        return fake.mean(0)

    evaluator = ring_evaluator()
    with pytest.raises(ConfigError, match=r"^metric: plugin metric 'broken' \(.*test_plugins"
                       r"\..*\.broken\) raised ZeroDivisionError: division by zero$"):  # fmt: skip
        evaluator(fakes())
    del metrics.METRICS["broken"]
    evaluator = ring_evaluator()
    with pytest.raises(ConfigError, match=r"plugin metric 'many' .* must return a 0-d tensor "
                       r"\(one number\), got shape \(2,\)"):  # fmt: skip
        evaluator(fakes())


@pytest.mark.parametrize(
    "name,kwargs,fn,said",
    [("fid", {}, None, "metric 'fid' is already registered"),
     ("step", {}, None, "metric 'step': a column of the results tables has that name"),
     ("loss_d", {}, None, "metric 'loss_d': a column of the results tables"),
     ("final_fid", {}, None, "metric 'final_fid': a column of the results tables"),
     ("lr_g", {}, None, "metric 'lr_g': a column of the results tables"),
     ("a+b", {}, None, r"metric name 'a\+b': must start with a letter"),
     ("ok", {"mode": "lower"}, None, "metric 'ok': mode must be one of min, max, got 'lower'"),
     ("ok", {"worst": math.inf}, None, "metric 'ok': worst must be a finite number"),
     ("ok", {"worst": "1"}, None, "metric 'ok': worst must be a finite number"),
     ("ok", {}, lambda fake, features: fake.mean(),
      r"metric 'ok': <lambda>\(fake, features\) cannot be called as fn\(fake, features, data\)"),
     ("ok", {}, "not a function", "metric 'ok': 'not a function' is not callable")],
)  # fmt: skip
def test_a_plugin_metric_is_checked_when_registered(registries, name, kwargs, fn, said):
    with pytest.raises(register.PluginError, match=said):
        register.metric(name, **{"mode": "min", "worst": 1.0, **kwargs})(fn)
    assert name not in metrics.METRICS or name == "fid"
    assert metrics.plugin_metrics() == ()


def test_a_plugin_metric_registered_twice_is_refused(registries):
    register.metric("twice", mode="min", worst=1.0)(lambda fake, features, data: fake.mean())
    with pytest.raises(register.PluginError, match="metric 'twice' is already registered"):
        register.metric("twice", mode="min", worst=1.0)


NEAR = """
from ganlab import register


@register.metric("near", mode="min", worst=1e5)
def near(fake, features, data):
    return fake.norm(dim=1).min()
"""


def near_sweep(tmp_path: Path, mode: str) -> Path:
    (tmp_path / "near.py").write_text(NEAR)
    path = tmp_path / "near.yaml"
    path.write_text("name: near\nimports: [near.py]\nbase: {dataset: ring8}\n"
                    f"objective: {{metric: near, mode: {mode}}}\n")  # fmt: skip
    return path


def test_a_plugin_metric_can_be_the_objective_in_its_own_direction(forget, tmp_path):
    forget.append("near")
    spec = sweep_spec.load(near_sweep(tmp_path, "min"))
    assert (spec.metric, spec.mode) == ("near", "min")
    assert spec.trial_config({}).metric == "near"
    with pytest.raises(ConfigError, match="mode: 'max' disagrees with 'near', where lower is"):
        TrialConfig.from_dict({"dataset": "ring8", "metric": "near", "mode": "max"})
    del sys.modules["near"]  # imported again (the registries as they were)
    metrics.METRICS.pop("near")
    with pytest.raises(SpecError, match=r"near.yaml: objective.mode: 'max' disagrees with "
                       r"'near', where lower is better: use mode 'min'"):  # fmt: skip
        sweep_spec.load(near_sweep(tmp_path, "max"))


def test_the_example_memorised_is_the_share_of_near_copies(forget):
    forget.append("tiny_gans")
    plugins.load([f"{PLUGIN}/"], ROOT)
    shapes = data.load("png-shapes")
    evaluator = Evaluator(shapes)
    assert evaluator.metrics[-1] == "memorised" and evaluator.n_fake == 200
    train = data.to_float(shapes.train)
    index = torch.arange(200) % len(train)
    copies = train[index] + 0.01  # each a training image, but for a slight shift
    # box-4.png and box-5.png are the same image: a copy of it is still a copy of one image
    assert evaluator(copies)["memorised"] == 1.0
    blends = copies.clone()
    first, second = index[:100], (index[:100] + 5) % len(train)  # bars with boxes, and so on
    blends[:100] = (train[first] + train[second]) / 2  # as near one image as the other
    assert evaluator(blends)["memorised"] == pytest.approx(0.5)
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert evaluator(noise)["memorised"] == 0.0
    assert metrics.METRICS["memorised"].mode == "min"


def test_plugin_metric_columns_are_written_after_the_built_ins_and_read_back(tmp_path):
    table = tmp_path / results.METRICS_TABLE
    recorded = {"near": {"mode": "min", "worst": 1e5, "doc": "nearest"}}
    row = {"sweep": "s", "trial_id": "a", "config_id": "c", "seed": 0, "step": 0, "fid": 1.0}
    results.write_part(table, "a", [{**row, "near": 0.25}], recorded)
    results.write_part(table, "b", [{**row, "trial_id": "b"}])  # no plugin metric: as ever
    schema = results.table_schema(results.METRICS_TABLE, recorded)
    assert schema.names == [*results.METRIC_COLUMNS, "near"]
    assert results.table_schema(results.TRIALS, recorded).names[-2:] == ["final_near", "best_near"]
    plain = pq.read_schema(table / rundir.part_file("b"))
    assert plain.metadata is None and plain == results.SCHEMAS[results.METRICS_TABLE]
    assert results.recorded_metrics(table) == recorded
    frame = results.read_table(table).set_index("trial_id")
    assert frame["near"].dtype == "float64" and frame["near"]["a"] == 0.25
    assert math.isnan(frame["near"]["b"])
