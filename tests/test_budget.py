"""A trial's memory, estimated before anything starts (`ganlab.budget`): the formula on a network
counted by hand, the largest trial of a search, and the limits it is held to."""

import os
import textwrap
import time
from pathlib import Path

import pytest

from ganlab import budget, models
from ganlab import spec as specs
from ganlab.config import ConfigError, TrialConfig

SMALL = {"width": 16, "depth": 1, "z_dim": 4, "seeds": [0], "execution": "sequential",
         "n_eval": 100, "batch_size": 8}  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_estimate_follows_the_formula_on_a_network_counted_by_hand():
    config = TrialConfig.from_dict(SMALL)  # ring8: samples of 2 numbers, raw features
    g, d = models.build(config.arch_config, (2,))  # on the CPU, for real
    params = sum(p.numel() for net in (g, d) for p in net.parameters())
    assert params == (4 * 16 + 16 + 16 * 2 + 2) + (2 * 16 + 16 + 16 + 1) == 179
    found = budget.estimate(config)
    assert found.per_seed == 4 * (4 * params + 64 * 2)  # weights, grads, moments; kept samples
    # Per sample, the leaf outputs: G 16 (linear) + 16 (identity norm) + 16 (relu) + 2 + 2 + 2,
    # D 2 (flatten) + 16 + 16 + 16 + 1 + 1; with the noise (4) and the real sample (2), and D's
    # graphs on the real and the fake batch.
    assert found.step == 4 * 8 * (4 + 2 + 54 + 2 * 52)
    assert found.evaluation == 100 * (4 * 2 + 3 * 8 * 2)
    assert found.total == 3376 + 5248 + 5600

    penalised = budget.estimate(config.replace(penalty="gp"))  # D's graphs twice more
    assert penalised.step == 4 * 8 * (4 + 2 + 54 + 4 * 52)
    with_ema = budget.estimate(config.replace(ema=0.99))
    assert with_ema.per_seed - found.per_seed == 4 * 114  # G's averaged copy
    batched = budget.estimate(config.replace(seeds=[0, 1], execution="batched"))
    assert batched.per_seed == found.per_seed + 4 * 3 * params  # the stacked copy
    assert batched.step == 2 * found.step and batched.networks == 2 * batched.per_seed


def test_a_network_too_large_to_index_is_estimated_without_building_it():
    config = TrialConfig.from_dict({**SMALL, "width": 10**10, "depth": 2})  # 1e20 weights
    found = budget.estimate(config)
    assert found.per_seed is None and found.total == float("inf")
    problem = budget.judge(config, found, budget.Limit(budget.CEILING, "the ceiling"))
    assert problem == budget.Problem("width", "a trial of width 10,000,000,000 cannot be built: "
                                     "G and D would have more elements than torch can index; "
                                     "make width smaller")  # fmt: skip


def test_a_trial_that_fits_passes_and_one_that_does_not_is_named_with_its_numbers():
    config = TrialConfig.from_dict(SMALL)
    found = budget.estimate(config)
    assert budget.judge(config, found, budget.Limit(found.total, "exactly enough")) is None
    problem = budget.judge(config, found, budget.Limit(found.total - 1, "a byte too little"))
    assert problem.field == "n_eval"  # the evaluation is the largest part here
    assert problem.message == (
        "a trial of n_eval 100 needs at least 13.9 KiB (networks 3.3 KiB: 1 seeds × 3.3 KiB of "
        "weights, gradients, Adam moments; a training step 5.12 KiB at batch_size 8; an "
        "evaluation 5.47 KiB of 100 samples), more than a byte too little; make n_eval smaller"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"width": 4096}, "width"), ({"batch_size": 10**6}, "batch_size"),
     ({"n_eval": 10**7}, "n_eval"), ({"seeds": list(range(1000)), "width": 512}, "seeds"),
     ({"z_dim": 10**5, "width": 256}, "z_dim")],
)  # fmt: skip
def test_the_field_named_is_the_one_that_makes_the_trial_large(changes, field):
    config = TrialConfig.from_dict({**SMALL, **changes})
    found = budget.estimate(config)
    limit = budget.Limit(found.total / 2, "half of it")
    assert budget.judge(config, found, limit).field == field


def test_the_largest_trial_of_a_search_respects_when(tmp_path):
    text = """
    base: {dataset: digits, arch: mlp, width: 64}
    search:
      arch: {choice: [mlp, dcgan]}
      width: {choice: [64, 100000], when: {arch: %s}}
      lr_g: {loguniform: [1.0e-4, 1.0e-3]}
    objective: {metric: fid}
    """
    spec = specs.load(write(tmp_path, text % "dcgan"))  # only a DCGAN gets the wide layers
    config, found = budget.largest(spec)
    assert (config.arch, config.width) == ("dcgan", 100000)
    assert found.total < budget.CEILING
    mlp = spec.trial_config({"arch": "mlp", "width": 100000})  # a trial the search never makes
    assert budget.estimate(mlp).total > budget.CEILING
    with pytest.raises(specs.SpecError, match="needs at least .* more than the 1 TiB") as caught:
        specs.load(write(tmp_path, text % "mlp"))
    assert caught.value.field == "search.width"


def test_a_range_counts_at_its_high_end_and_invalid_combinations_are_skipped(tmp_path):
    text = """
    base: {dataset: ring8, batch_size: 60}
    search:
      width: {int: [8, 300]}
      batch_size: {choice: [60, 64]}
      pack: {choice: [1, 3]}
    """
    spec = specs.load(write(tmp_path, text))
    with pytest.raises(ConfigError, match="must divide batch_size"):
        spec.trial_config({"batch_size": 64, "pack": 3})  # no trial of the search has it
    config, _ = budget.largest(spec)
    assert (config.width, config.batch_size, config.pack) == (300, 64, 1)


def test_a_local_sweep_shares_the_machine_among_the_trials_it_runs_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "machine_memory", lambda: 8 * 2**30)
    spec = specs.load(write(tmp_path, "base: {dataset: ring8}\nmax_concurrent: 4\n"))
    assert budget.trials_at_once(spec, cpus=2) == 2  # two CPUs, a CPU a trial
    limit = budget.sweep_limit(spec, cpus=2)
    assert limit == (4 * 2**30, "the 4 GiB of this machine's 8 GiB that each of the 2 trials "
                     "running at once gets")  # fmt: skip
    one = specs.load(write(tmp_path, "base: {dataset: ring8}\nresources: {cpu: 2}\n"))
    assert budget.sweep_limit(one, cpus=2) == (8 * 2**30, "this machine's memory (8 GiB)")


def test_a_trial_on_a_card_gets_its_share_of_the_smallest_card(tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"  # what `nvidia-smi --query-gpu=memory.total ...` prints, in MiB
    smi.write_text("#!/bin/sh\nprintf '81559\\n24564\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    assert budget.card_memory() == 24564 * 2**20
    spec = specs.load(write(tmp_path, "base: {dataset: ring8}\nresources: {gpu: 0.25}\n"))
    limit = budget.sweep_limit(spec, cpus=2)
    assert limit == (24564 * 2**20 / 4, "the 6 GiB of a 24 GiB card that a trial of "
                     "resources.gpu 0.25 gets")  # fmt: skip
    smi.write_text("#!/bin/sh\nexit 9\n")  # no driver: nothing to compare with
    assert budget.card_memory() is None and budget.sweep_limit(spec, cpus=2) is None


def test_the_machines_memory_is_the_lower_of_its_ram_and_its_cgroups_limit(tmp_path, monkeypatch):
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    unlimited, limited = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    unlimited.write_text("max\n")
    limited.write_text(f"{2**30}\n")
    monkeypatch.setattr(budget, "CGROUP_LIMITS", (str(unlimited), str(tmp_path / "absent")))
    assert budget.machine_memory() == ram
    monkeypatch.setattr(budget, "CGROUP_LIMITS", (str(unlimited), str(limited)))
    assert budget.machine_memory() == min(ram, 2**30)


def test_the_estimate_builds_nothing_and_answers_at_once():
    config = TrialConfig.from_dict({**SMALL, "width": 10**6, "depth": 3})
    start = time.process_time()
    found = budget.estimate(config)  # on the meta device: 32 TB of weights, none allocated
    assert time.process_time() - start < 5
    hidden = 2 * (10**6 * 10**6 + 10**6)  # G's and D's two hidden-to-hidden layers
    assert found.per_seed > 4 * 4 * 2 * hidden
