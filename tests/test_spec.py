import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ganlab import rundir
from ganlab import spec as specs
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
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_the_field(tmp_path, case):
    text, field, message = MALFORMED[case]
    with pytest.raises(specs.SpecError, match=message) as caught:
        specs.load(write(tmp_path, text))
    assert caught.value.field == field
    assert str(tmp_path / "sweep.yaml") in str(caught.value)


def test_every_malformed_file_exits_2_from_the_cli_and_writes_nothing(tmp_path):
    """One process for all cases keeps this fast; the CLI must not start Ray for any of them."""
    script = textwrap.dedent(
        """
        import sys, os
        from pathlib import Path
        from ganlab.cli import main
        codes = []
        for path in sys.argv[1:]:
            codes.append(main(["sweep", path, "--storage", os.environ["RUNS"]]))
        print(codes)
        print("ray" in sys.modules and __import__("ray").is_initialized())
        """
    )
    runs = tmp_path / "runs"
    paths = []
    for i, case in enumerate(sorted(MALFORMED)):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(MALFORMED[case][0])
        paths.append(str(path))
    out = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "RUNS": str(runs)},
    )  # fmt: skip
    codes, ray_started = out.stdout.strip().splitlines()
    assert codes == str([2] * len(paths)), out.stderr
    assert ray_started == "False"
    assert not runs.exists()
    for case, line in zip(sorted(MALFORMED), out.stderr.strip().splitlines(), strict=True):
        assert MALFORMED[case][1] in line and "error" in line


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
    monkeypatch.setitem(SCHEDULERS, "pbt", lambda spec: None)
    spec = specs.load(write(tmp_path, GOOD.replace("name: asha", "name: pbt") + "search_alg: qmc"))
    assert spec.search_alg == "qmc" and spec.scheduler.name == "pbt"


def test_a_scheduler_of_the_wrong_type_names_the_registered_ones(tmp_path):
    with pytest.raises(specs.SpecError, match="must be `asha`, `none` or a mapping with `name`"):
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
