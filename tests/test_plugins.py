"""Plugins (`imports:`): the example plugin through real Ray, locally and on a two-node cluster;
plugins that cannot be imported or name a typo; a worker's configuration error in the tables,
not retried; `--resume` and a plugin whose code changed; the `ganlab.register` API's checks.

A plugin registers names for the whole process, so every sweep here runs as `ganlab` does, in
a subprocess of its own; the API's own tests put the registries back afterwards.
"""

import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganlab import data, losses, models, penalties, plugins, register, results
from ganlab.config import ConfigError, TrialConfig
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


# --- through real Ray ---------------------------------------------------------------------------


def test_the_example_plugin_sweep_runs_at_smoke_size_on_local_ray(tmp_path):
    done = ganlab("sweep", str(EXAMPLE), "--smoke", "--storage", str(tmp_path / "runs"),
                  "--no-report", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    check_example_tables(tmp_path / "runs" / "plugin_sweep-smoke")


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
             models.SHAPE_PROBLEMS, data.DATASETS)  # fmt: skip
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
