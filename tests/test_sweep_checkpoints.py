"""A trial's checkpoints as the sweep writes and reads them: `weights_only`, and a corrupt or
unsafe latest checkpoint falling back to the one before it."""

from pathlib import Path

import pytest
import torch
from ray import tune

from ganlab import rundir, sweep
from ganlab.config import TrialConfig
from ganlab.trial import Trial, read_state

TINY = {"steps": 4, "eval_every": 2, "width": 8, "batch_size": 8, "n_eval": 20, "seeds": [0, 1]}


def trial(**fields) -> Trial:
    return Trial(TrialConfig.from_dict({**TINY, **fields}))


def save(checkpoint_dir, state) -> tune.Checkpoint:
    checkpoint_dir.mkdir(parents=True)
    torch.save(state, checkpoint_dir / rundir.STATE_FILE)
    return tune.Checkpoint(str(checkpoint_dir))


@pytest.mark.parametrize(
    "fields",
    [
        {"dataset": "ring8", "arch": "mlp", "ema": 0.9, "spectral_norm": True, "norm_g": "batch",
         "norm_d": "layer"},
        {"dataset": "digits", "arch": "dcgan", "norm_g": "batch", "norm_d": "instance",
         "spectral_norm": True, "ema": 0.99, "pack": 2},
        {"dataset": "ring8", "loss": "wasserstein", "clip": 0.01, "penalty": "gp"},
    ],
    ids=["mlp-ema-sn-norms", "dcgan-digits-pack", "wasserstein-gp"],
)  # fmt: skip
def test_a_trials_whole_state_loads_with_weights_only(tmp_path, fields):
    first = trial(**fields)
    first.train(2)
    torch.save(first.state_dict(), tmp_path / rundir.STATE_FILE)
    state = read_state(tmp_path / rundir.STATE_FILE)  # torch.load(..., weights_only=True)
    second = trial(**fields)
    second.load_state_dict(state)
    first.train(2)
    second.train(2)  # the restored trial goes on exactly as the original
    assert second.step == first.step == 4
    for a, b in zip(first.seeds, second.seeds, strict=True):
        for x, y in zip(a.g.state_dict().values(), b.g.state_dict().values(), strict=True):
            assert torch.equal(x, y)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    source = trial()
    source.run(until=2)
    older = save(tmp_path / "trial_x" / "checkpoint_000001", source.state_dict())
    source.run(until=4)
    latest = save(tmp_path / "trial_x" / "checkpoint_000002", source.state_dict())
    (tmp_path / "trial_x" / "checkpoint_000002" / rundir.STATE_FILE).write_bytes(b"PK\x03\x04")
    save(tmp_path / "trial_x" / "checkpoint_000003", {"newer": "than Ray's latest"})

    resumed = trial()
    assert sweep.restore(resumed, latest) == 2
    assert resumed.step == 2 and len(resumed.history) == 2
    assert sweep.restore(trial(), older) == 2


class Payload:
    def __reduce__(self):
        return (open, ("/tmp/ganlab-weights-only-breached", "w"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    source = trial()
    source.run(until=2)
    save(tmp_path / "checkpoint_000000", source.state_dict())
    latest = save(tmp_path / "checkpoint_000001", {**source.state_dict(), "x": Payload()})
    resumed = trial()
    assert sweep.restore(resumed, latest) == 2  # the unsafe one skipped, the one before loaded
    assert not Path("/tmp/ganlab-weights-only-breached").exists()


def test_no_readable_checkpoint_is_an_error_naming_them(tmp_path):
    for name in ("checkpoint_000000", "checkpoint_000001"):
        (tmp_path / name).mkdir()
        (tmp_path / name / rundir.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="no readable checkpoint") as raised:
        sweep.restore(trial(), tune.Checkpoint(str(tmp_path / "checkpoint_000001")))
    assert "checkpoint_000001: " in str(raised.value) and "checkpoint_000000: " in str(
        raised.value
    )
