import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ganlab import rundir
from ganlab import spec as specs
from ganlab.config import TrialConfig
from ganlab.search import SAMPLERS, SCHEDULERS

GOOD = """
name: t
base: {dataset: ring8, steps: 100, eval_every: 50}
search:
  loss: {choice: [non-saturating, hinge, wasserstein]}
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
  penalty: {choice: [none, gp]}
  penalty_weight: {uniform: [1, 20], when: {penalty: gp}}
  clip: {uniform: [0.005, 0.05], when: {loss: wasserstein}}
seeds: 2
scheduler: {name: asha, grace_period: 50}
objective: {metric: fid, mode: min}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_becomes_a_typed_spec(tmp_path):
    spec = specs.load(write(tmp_path, GOOD))
    assert spec.seeds == (0, 1) and spec.metric == "fid" and spec.scheduler.grace_period == 50
    assert [p.name for p in spec.search] == ["loss", "lr_g", "penalty", "penalty_weight", "clip"]
    assert spec.search[3].when == (("penalty", ("gp",)),)
    config = spec.trial_config({"loss": "wasserstein", "clip": 0.01, "lr_g": 5e-4})
    assert config.clip == 0.01 and config.seeds == (0, 1) and config.steps == 100


def test_smoke_shrinks_but_keeps_the_search(tmp_path):
    spec = specs.load(write(tmp_path, GOOD), smoke=True)
    config = spec.trial_config({})
    assert (config.steps, config.eval_every, spec.num_samples, spec.seeds) == (40, 20, 2, (0, 1))
    assert spec.scheduler.grace_period == 20 and len(spec.search) == 5


BOMB_LEVELS = list(zip("abcdefgh", "bcdefghi", strict=True))  # each level 9 of the one before
MALFORMED = {
    "unknown top-level field": ("serch: {}", "serch", "unknown field; allowed: name"),
    "unknown base field": ("base: {lr: 0.1}", "base.lr", "unknown field"),
    "unknown dataset": ("base: {dataset: ring9}", "base.dataset", "not one of: cifar10"),
    "bad loss choice": (
        "search: {loss: {choice: [hinge, hnge]}}",
        "search.loss",
        "value 'hnge': 'hnge' is not one of",
    ),
    "unknown search field": ("search: {lr: {uniform: [0, 1]}}", "search.lr", "not a trial field"),
    "inverted bounds": (
        "search: {lr_g: {uniform: [0.1, 0.01]}}",
        "search.lr_g.uniform",
        "low must be below high",
    ),
    "log of zero": (
        "search: {lr_g: {loguniform: [0, 0.01]}}",
        "search.lr_g.loguniform",
        "must be positive",
    ),
    "two kinds": (
        "search: {lr_g: {uniform: [0.1, 0.2], choice: [1]}}",
        "search.lr_g",
        "exactly one of",
    ),
    "when on unknown": (
        "search: {penalty_weight: {uniform: [1, 2], when: {penalty: gp}}}",
        "search.penalty_weight.when.penalty",
        "must name a `choice` field",
    ),
    "bad seeds": ("seeds: [1, 1]", "seeds", "distinct"),
    "zero seeds": ("seeds: 0", "seeds", "at least 1"),
    "bad scheduler": ("scheduler: hyperband", "scheduler.name", "not one of: asha, none"),
    "grace above steps": (
        "scheduler: {name: asha, grace_period: 10000}",
        "scheduler.grace_period",
        "exceeds base.steps",
    ),
    "bad search alg": ("search_alg: bayes", "search_alg", "not one of: optuna, random, grid"),
    "grid with a range": (
        "search_alg: grid\nsearch: {lr_g: {uniform: [0.1, 0.2]}}",
        "search.lr_g",
        "grid search takes plain `choice`",
    ),
    "bad metric": ("objective: {metric: fidd}", "objective.metric", "not one of: fid"),
    "mode against the metric": (
        "objective: {metric: fid, mode: max}",
        "objective.mode",
        "'max' disagrees with 'fid', where lower is better: use mode 'min'",
    ),
    "string gpu": ("resources: {gpu: one}", "resources.gpu", "must be a number"),
    "gpu fraction above one": ("resources: {gpu: 1.5}", "resources.gpu", "fractions only below 1"),
    "cuda without a gpu": (
        "base: {device: cuda}",
        "base.device",
        "'cuda' needs a GPU, but resources.gpu is 0: give each trial a GPU",
    ),
    "cuda searched with gpu 0": (
        "search: {device: {choice: [cpu, cuda]}}\nresources: {cpu: 1, gpu: 0}",
        "search.device",
        "choice 'cuda' needs a GPU, but resources.gpu is 0: .* or use device auto",
    ),
    "negative budget": ("time_budget: -5", "time_budget", "seconds > 0"),
    "num_samples zero": ("num_samples: 0", "num_samples", "integer >= 1"),
    "not yaml": ("base: {dataset: [ring8", "file", "not valid YAML"),
    "not a mapping": ("- just\n- a list", "file", "must be a mapping"),
    "seeds in base": ("base: {seeds: [0, 1]}", "base.seeds", "top level"),
    "cross-field": ("base: {loss: hinge, clip: 0.01}", "base.clip", "wasserstein"),
    "key given twice": (
        "base: {dataset: ring8}\nseeds: 2\nbase: {steps: 10}",
        "base",
        "key 'base' is given twice, at line 1, column 1 and line 3, column 1; keep one",
    ),
    "nested key given twice": (
        "search:\n  lr_g: {uniform: [1.0e-4, 1.0e-3]}\n  lr_g: {choice: [1.0e-4]}",
        "search.lr_g",
        "key 'lr_g' is given twice, at line 2, column 3 and line 3, column 3",
    ),
    "alias bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in BOMB_LEVELS),
        "file",
        "more than 100,000 values once its aliases",
    ),
    "infinite bound": (
        "search: {lr_g: {uniform: [1.0e-4, .inf]}}",
        "search.lr_g.uniform[1]",
        r"\.inf at line 1, column 35 is not a finite number",
    ),
    "nan field": (
        "base: {lr_d: .nan}",
        "base.lr_d",
        r"\.nan at line 1, column 14 is not a finite",
    ),
    "overflowing number": (
        "base: {max_grad_norm: 1e999}",
        "base.max_grad_norm",
        "1e999 at line 1",
    ),
    "seeds of booleans": (
        "seeds: [true, false]",
        "seeds",
        r"must be a count or a list of integers; got \[True, False\]",
    ),
    "too many seeds": ("seeds: 10000", "seeds", "at most 1,000 .*; got 10000"),
    "too many listed seeds": (
        f"seeds: [{', '.join(map(str, range(1001)))}]",
        "seeds",
        "at most 1,000 seeds a trial, got 1,001",
    ),
    "seed past a generator": (
        "seeds: [0, 9223372036854775807]",
        "seeds",
        r"each seed must be in \[0, 9223372036853775805\) .*, got 9223372036854775807",
    ),
    "negative seed": ("seeds: [-1, 0]", "seeds", r"in \[0, .*got -1"),
    "search seed past numpy": ("search_seed: 4294967296", "search_seed", r"below 2\*\*32"),
    "integer of 150 digits": (
        f"base: {{width: {'9' * 150}}}",
        "base.width",
        "an integer of 150 characters at line 1, column 15; no field takes one of more than 100",
    ),
    "mlp of a million layers": ("base: {depth: 1000000}", "base.depth", "at most 1,000 hidden"),
    "width no machine holds": (
        "base: {width: 100000000}",
        "base.width",
        r"a trial of width 100,000,000 needs at least 2.91 EiB \(networks 2.91 EiB: 3 seeds .*"
        r"more than the 1 TiB any trial may take, anywhere; make width smaller",
    ),
    "width torch cannot index": (
        "base: {width: 10000000000}",
        "base.width",
        "cannot be built: G and D would have more elements than torch can index",
    ),
    "searched width no machine holds": (
        "search: {width: {int: [16, 100000000]}}",
        "search.width",
        "a trial of width 100,000,000 needs at least",
    ),
    "batch no machine holds": (
        "base: {batch_size: 1000000000}",
        "base.batch_size",
        "a training step 38.2 TiB at batch_size 1000000000",
    ),
    "evaluation no machine holds": (
        "base: {n_eval: 100000000000}",
        "base.n_eval",
        "an evaluation 5.09 TiB of 100,000,000,000 samples",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_the_field(tmp_path, case):
    text, field, message = MALFORMED[case]
    with pytest.raises(specs.SpecError, match=message) as caught:
        specs.load(write(tmp_path, text))
    assert caught.value.field == field
    assert str(tmp_path / "sweep.yaml") in str(caught.value)


def test_cuda_with_a_gpu_and_auto_without_one_are_accepted(tmp_path):
    cuda = GOOD.replace("eval_every: 50}", "eval_every: 50, device: cuda}")
    on_a_card = specs.load(write(tmp_path, cuda + "resources: {gpu: 0.25}\n"))
    assert (on_a_card.base["device"], on_a_card.resources.gpu) == ("cuda", 0.25)
    auto = specs.load(write(tmp_path, GOOD.replace("search:", "search:\n  device: {choice: "
                                                    "[cpu, auto]}")))  # fmt: skip
    assert auto.search[0].values == ("cpu", "auto") and auto.resources.gpu == 0


AT_FULL_SIZE_ONLY = {
    # wrong as written, in a field --smoke replaces: refused at --smoke too
    "batch size zero": ("base: {batch_size: 0}", "base.batch_size", "must be at least 1"),
    "width no machine holds": MALFORMED["width no machine holds"],
    "negative budget": MALFORMED["negative budget"],
    "no concurrency": ("max_concurrent: 0", "max_concurrent", "integer >= 1; got 0"),
    "grace above steps": MALFORMED["grace above steps"],
    "seeds of booleans": MALFORMED["seeds of booleans"],
    "too many seeds": MALFORMED["too many seeds"],
}
AT_SMOKE = {
    "base not a mapping": ('base: "str"', "base", "must be a mapping of trial fields"),
    "smoke base not a mapping": (
        "smoke: {base: [1, 2]}",
        "smoke.base",
        "must be a mapping of trial fields",
    ),
    "smoke not a mapping": ("smoke: [1, 2]", "smoke", "must be a mapping of overrides"),
    "unknown smoke field": ("smoke: {serch: {}}", "smoke.serch", "unknown field; allowed: name"),
    "smoke's own bad value": (
        "smoke: {base: {pack: 5}}",
        "smoke.base.pack",
        r"^{path}: smoke.base.pack: must divide batch_size \(32\)$",
    ),
    "smoke's own seeds": ("smoke: {seeds: [true]}", "smoke.seeds", "list of integers"),
    "only --smoke's sizes fail": (
        "base: {pack: 3, batch_size: 63}",
        "base.pack",
        r"^{path}: base.pack: must divide batch_size \(32\) \(at --smoke's sizes: num_samples 2, "
        r"seeds 2, time_budget None, max_concurrent 2, steps 40, eval_every 20, width 16, "
        r"batch_size 32, n_eval 200; the file's `smoke:` section may set others\)$",
    ),
}


@pytest.mark.parametrize("case", sorted(AT_FULL_SIZE_ONLY))
def test_smoke_refuses_a_file_that_is_wrong_at_full_size(tmp_path, case):
    """--smoke replaces these fields, but validates the file as written first."""
    text, field, message = AT_FULL_SIZE_ONLY[case]
    path = write(tmp_path, f"base: {{dataset: ring8}}\n{text}" if "base" not in text else text)
    for smoke in (False, True):
        with pytest.raises(specs.SpecError, match=message) as caught:
            specs.load(path, smoke=smoke)
        assert caught.value.field == field


@pytest.mark.parametrize("case", sorted(AT_SMOKE))
def test_smoke_names_the_field_its_section_or_its_sizes_broke(tmp_path, case):
    text, field, message = AT_SMOKE[case]
    path = write(tmp_path, text)
    with pytest.raises(specs.SpecError, match=message.format(path=path)) as caught:
        specs.load(path, smoke=True)
    assert caught.value.field == field
    if case != "base not a mapping":
        assert specs.load(path).name == "sweep"  # the file as written is fine


@pytest.mark.parametrize("smoke", [False, True], ids=["full size", "smoke"])
def test_every_malformed_file_exits_2_from_the_cli_and_writes_nothing(tmp_path, smoke):
    """One process for all cases keeps this fast; the CLI must not start Ray for any of them."""
    script = textwrap.dedent(
        """
        import sys, os
        from pathlib import Path
        from ganlab.cli import main
        codes = []
        flags = ["--smoke"] if os.environ["SMOKE"] else []
        for path in sys.argv[1:]:
            codes.append(main(["sweep", path, "--storage", os.environ["RUNS"], *flags]))
        print(codes)
        print("ray" in sys.modules and __import__("ray").is_initialized())
        """
    )
    runs = tmp_path / "runs"
    cases = {**MALFORMED, **(AT_SMOKE if smoke else {})}
    paths = []
    for i, case in enumerate(sorted(cases)):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(cases[case][0])
        paths.append(str(path))
    out = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=300,
        env={**os.environ, "RUNS": str(runs), "SMOKE": "1" if smoke else ""},
    )  # fmt: skip
    codes, ray_started = out.stdout.strip().splitlines()
    assert codes == str([2] * len(paths)), out.stderr
    assert ray_started == "False"
    assert not runs.exists()
    lines = out.stderr.strip().splitlines()
    for path, case, line in zip(paths, sorted(cases), lines, strict=True):
        assert line.startswith(f"ganlab sweep: error: {path}: {cases[case][1]}: "), line


def test_a_storage_scheme_nobody_writes_to_is_refused_naming_the_file(tmp_path, capsys):
    from ganlab.cli import main

    path = write(tmp_path, GOOD)
    allowed = "give a local path or a URI of s3://, gs://, gcs://, file://"
    with pytest.raises(specs.SpecError, match=f"scheme 'ftp' is not supported; {allowed}"):
        specs.load(write(tmp_path, GOOD + "storage: ftp://example.org/runs\n"))
    assert main(["sweep", str(path), "--storage", "ftp://example.org/runs"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"ganlab sweep: error: {path}: storage: 'ftp://example.org/runs': "
                     f"scheme 'ftp' is not supported; {allowed}")  # fmt: skip


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(specs.SpecError) as caught:
        specs.load(path)
    assert str(caught.value) == (
        f"{path}: file: not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"
    )


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    text, _, _ = MALFORMED["alias bomb"]  # 9**9 values once expanded
    start = time.process_time()
    with pytest.raises(specs.SpecError, match="more than 100,000 values"):
        specs.load(write(tmp_path, text))
    assert time.process_time() - start < 5


def test_an_existing_run_is_not_touched_by_a_bad_file(tmp_path):
    from ganlab.cli import main

    run = tmp_path / "runs" / "sweep"
    run.mkdir(parents=True)
    (run / rundir.TRIALS).write_bytes(b"precious")
    path = write(tmp_path, "base: {lr_g: -1}")
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    assert (run / rundir.TRIALS).read_bytes() == b"precious"
    assert sorted(p.name for p in run.iterdir()) == [rundir.TRIALS]


@pytest.mark.parametrize(
    "text,field,registry",
    [(GOOD + "search_alg: bayes", "search_alg", SAMPLERS),
     (GOOD.replace("name: asha", "name: hyperband"), "scheduler.name", SCHEDULERS)],
    ids=["search_alg", "scheduler"],
)  # fmt: skip
def test_an_unknown_search_or_scheduler_lists_exactly_the_registered_names(
    tmp_path, text, field, registry
):
    with pytest.raises(specs.SpecError) as caught:
        specs.load(write(tmp_path, text))
    assert caught.value.field == field
    assert str(caught.value).endswith(f"is not one of: {', '.join(registry)}")


def test_a_registered_search_or_scheduler_is_a_valid_choice(tmp_path, monkeypatch):
    monkeypatch.setitem(SAMPLERS, "qmc", lambda spec: None)
    monkeypatch.setitem(SCHEDULERS, "hyperband", lambda spec: None)
    text = GOOD.replace("name: asha", "name: hyperband") + "search_alg: qmc"
    spec = specs.load(write(tmp_path, text))
    assert spec.search_alg == "qmc" and spec.scheduler.name == "hyperband"


def test_a_scheduler_of_the_wrong_type_names_the_registered_ones(tmp_path):
    wanted = "must be `asha`, `none`, `pbt` or a mapping with `name`"
    with pytest.raises(specs.SpecError, match=wanted):
        specs.load(write(tmp_path, GOOD.replace("{name: asha, grace_period: 50}", "[asha]")))


def test_a_file_that_leaves_fields_out_gets_the_sweep_specs_defaults(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text("base: {dataset: ring8}\n")
    loaded = specs.load(path)
    for key in ("seeds", "search_alg", "search_seed", "num_samples", "max_concurrent", "storage",
                "max_failures", "metric", "time_budget"):  # fmt: skip
        assert getattr(loaded, key) == specs.DEFAULTS[key], key
    assert loaded.resources == specs.Resources()
    assert (loaded.seeds, loaded.num_samples, loaded.search_alg) == ((0, 1, 2), 10, "optuna")
    assert loaded.scheduler.name == specs.Scheduler.name == "asha"
    assert loaded.scheduler.reduction_factor == specs.Scheduler.reduction_factor


def test_the_scheduler_default_says_what_it_is_and_is_resolved_on_reading(tmp_path):
    assert specs.Scheduler().grace_period is None  # not given, rather than a 0 ASHA would take
    no_scheduler = GOOD.replace("scheduler: {name: asha, grace_period: 50}\n", "")
    assert specs.load(write(tmp_path, no_scheduler)).scheduler.grace_period == 50  # eval_every
    short = no_scheduler.replace("steps: 100", "steps: 30")
    assert specs.load(write(tmp_path, short)).scheduler.grace_period == 30  # all of its steps
    with pytest.raises(specs.SpecError, match="must be an integer >= 1; got None"):
        specs.load(write(tmp_path, GOOD.replace("grace_period: 50", "grace_period: null")))


def test_each_part_of_a_sweep_file_has_one_typed_reader(tmp_path):
    path = tmp_path / "parts.yaml"
    config = TrialConfig.from_dict({"steps": 100, "eval_every": 40})
    assert specs.Resources.from_raw(path, {"cpu": 2, "gpu": 0.5}) == specs.Resources(2.0, 0.5)
    assert specs.Scheduler.from_raw(path, "none", config) == specs.Scheduler("none", 40, 3.0)
    param = specs.Param.from_raw(path, "lr_g", {"loguniform": [1, 2]}, {}, {})
    assert param == specs.Param("lr_g", "loguniform", (1, 2))
    assert all(type(v) is int for v in param.values)  # as written: Optuna's int or float range
    for read, raw, message in [
        (lambda raw: specs.Resources.from_raw(path, raw), {"cpu": True}, "resources.cpu: must "
         "be a number >= 0; got True"),
        (lambda raw: specs.Scheduler.from_raw(path, raw, config), {"reduction_factor": 1},
         "scheduler.reduction_factor: must be a number > 1; got 1$"),
        (lambda raw: specs.Param.from_raw(path, "width", raw, {}, {}), {"int": [8, 16.5]},
         r"search.width.int: must be \[low, high\], two integers; got \[8, 16.5\]"),
        (lambda raw: specs.SweepSpec.from_raw(path, raw), {"time_budget": "1h"},
         "time_budget: must be seconds > 0 or null; got '1h'"),
    ]:  # fmt: skip
        with pytest.raises(specs.SpecError, match=f"^{path}: {message}"):
            read(raw)


def test_what_a_sweep_records_for_resume_is_as_before(tmp_path):
    """--resume compares this record with the one a sweep started with: its shape must not move
    (a sweep started before the typed readers resumes)."""
    record = specs.load(write(tmp_path, GOOD)).record()
    assert record["scheduler"] == {"name": "asha", "grace_period": 50, "reduction_factor": 3.0}
    assert record["resources"] == {"cpu": 1.0, "gpu": 0.0}
    assert record["seeds"] == [0, 1] and record["search"][3] == {
        "name": "penalty_weight", "kind": "uniform", "values": [1, 20],
        "when": [["penalty", ["gp"]]],
    }  # fmt: skip
    assert sorted(record) == sorted(f.name for f in dataclasses.fields(specs.SweepSpec)
                                    if f.name not in ("path", "storage", "loggers"))  # fmt: skip


def test_the_command_lines_overrides_win_over_the_files_smoke_section(tmp_path):
    path = write(tmp_path, GOOD + "smoke: {storage: smoke-runs, base: {data_dir: d}}\n")
    spec = specs.load(path, smoke=True, num_samples=5, data_dir="mine", storage="elsewhere")
    assert (spec.num_samples, spec.base["data_dir"], spec.storage) == (5, "mine", "elsewhere")
    spec = specs.load(path, smoke=True)
    assert (spec.num_samples, spec.base["data_dir"], spec.storage) == (2, "d", "smoke-runs")


PBT = """
name: p
base: {dataset: ring8, steps: 100, eval_every: 25}
search:
  lr_d: {loguniform: [1.0e-4, 1.0e-3]}
  beta1: {uniform: [0.0, 0.9]}
scheduler: {name: pbt, perturbation_interval: 50}
"""


def test_a_pbt_sweep_reads_its_scheduler_and_searches_only_mutable_fields(tmp_path):
    spec = specs.load(write(tmp_path, PBT))
    assert spec.scheduler == specs.Scheduler("pbt", 25, 3.0, 50, 0.25, 0.25)
    assert spec.record()["scheduler"]["perturbation_interval"] == 50
    no_interval = PBT.replace(", perturbation_interval: 50", "")
    assert specs.load(write(tmp_path, no_interval)).scheduler.perturbation_interval == 25
    assert specs.load(write(tmp_path, PBT), smoke=True).scheduler.perturbation_interval == 20
    allowed = "lr_g, lr_d, beta1, beta2, penalty_weight, ema"
    for text, field, message in [
        (PBT.replace("search:\n", "search:\n  width: {choice: [8, 16]}\n"), "search.width",
         f"only fields that can change mid-training: {allowed}"),
        (PBT.replace("uniform: [0.0, 0.9]}", "uniform: [0.0, 0.9], when: {ema: 0.9}}")
         .replace("search:\n", "search:\n  ema: {choice: [0.9, 0.99]}\n"), "search.beta1.when",
         "takes no `when`"),
        (PBT.replace("interval: 50", "interval: 30"), "scheduler.perturbation_interval",
         "must be a multiple of base.eval_every (25)"),
        (PBT.replace("interval: 50", "interval: 50, quantile_fraction: 0.7"),
         "scheduler.quantile_fraction", "from 0 to 0.5"),
        (PBT + "search_alg: optuna\n", "search_alg", "at random"),
        (PBT.replace("search:\n", "search:\n  ema: {choice: [0.0, 0.99]}\n"), "search.ema",
         "above 0"),
        (PBT.replace("name: pbt, perturbation_interval: 50", "name: asha, quantile_fraction: 0.5"),
         "scheduler.quantile_fraction", "only for scheduler pbt"),
    ]:  # fmt: skip
        with pytest.raises(specs.SpecError) as caught:
            specs.load(write(tmp_path, text))
        assert caught.value.field == field
        assert message is None or message in caught.value.message
