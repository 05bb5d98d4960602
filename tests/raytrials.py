"""Trial directories in Ray Tune's on-disk format, as a ganlab sweep leaves them, without Ray.

`write_trial` writes what Ray writes for one trial of `ganlab.sweep.train` (as read from real
runs of Ray 2.60): `params.json`; `result.json`, one JSON line per report (the trial's report,
the fields `train` adds, and those Ray adds); a `checkpoint_00000N/` per report with `samples.pt`
(only the newest `keep` of them, like `CheckpointConfig(num_to_keep=...)`); and, for a trial that
failed, `error.txt` in Ray's format (a `Failure # N (occurred at ...)` header, the worker's
traceback with its ANSI-coloured first line, the exception last).
"""

import json
import os
from pathlib import Path
from typing import Any

import torch

from ganlab import rundir
from ganlab.config import TrialConfig

PROTOCOL = json.dumps({"extractor": "raw", "n_real": 50, "n_fake": 50, "k": 5})


def trial_config(**fields: Any) -> dict[str, Any]:
    base = {"dataset": "ring8", "steps": 60, "eval_every": 20, "seeds": [0, 1], "width": 16}
    return TrialConfig.from_dict({**base, **fields}).to_dict()


def report(trial_id: str, config: dict, step: int, index: int, **seed_changes: dict) -> dict:
    """One line of result.json: what the trial reports at `step` (its `index`-th report)."""
    seeds = {}
    for seed in config["seeds"]:
        values = {"fid": 1.0 / (1 + step + seed), "kid": 0.5 / (1 + step), "modes": 8.0,
                  "precision": 0.9, "recall": 0.8, "collapsed": False,
                  "diverged": False}  # fmt: skip
        if step:
            values.update(loss_d=0.6 + step * 1e-3, loss_g=1.1, d_real=0.7, d_fake=0.3,
                          grad_norm_d=2.0, grad_norm_g=3.0)  # fmt: skip
        seeds[str(seed)] = {**values, **seed_changes.get(str(seed), {})}
    fids = sorted(s.get("fid", 1e5) for s in seeds.values())
    return {
        "step": step, "objective": fids[len(fids) // 2], "div_rate": 0.0, "collapse_rate": 0.0,
        "wall_s": 0.5 * (1 + index), "samples_per_s": 1234.5, "device": "cpu",
        "protocol": PROTOCOL, "last": step >= config["steps"], "seeds": seeds,
        "device_name": "cpu", "execution": "sequential", "reseeds": [],
        "trial_config": config, "node_id": "ab" * 28, "started_at": 1.8e9,
        "reported_at": 1.8e9 + index, "resumed_from_step": None, "timestamp": 1800000000,
        "checkpoint_dir_name": f"checkpoint_{index:06d}", "should_checkpoint": True,
        "done": False, "training_iteration": index + 1, "trial_id": trial_id,
        "date": "2027-01-15_08-00-00", "time_this_iter_s": 0.1, "time_total_s": 0.5,
        "pid": 4242, "hostname": "vm", "node_ip": "127.0.0.1", "config": {"loss": "hinge"},
        "time_since_restore": 0.5, "iterations_since_restore": index + 1,
    }  # fmt: skip


def write_trial(
    experiment: Path,
    trial_id: str,
    config: dict,
    reports: list[dict],
    samples: dict[int, torch.Tensor] | Path | None = None,
    error: str | None = None,
    keep: int = 2,
) -> Path:
    """One trial directory `experiment/trial_<id>`; `samples` (tensors, or a samples.pt file to
    hard-link) go into each kept checkpoint."""
    trial_dir = experiment / rundir.trial_dir_name(trial_id)
    trial_dir.mkdir(parents=True, exist_ok=True)
    searched = {k: v for k, v in config.items() if k in ("loss", "lr_d")}
    (trial_dir / rundir.PARAMS_FILE).write_text(json.dumps(searched, indent=2))
    (trial_dir / rundir.RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in reports))
    for index in range(max(0, len(reports) - keep), len(reports)):
        if samples is not None:
            write_samples(trial_dir / f"checkpoint_{index:06d}", samples)
    if error is not None:
        (trial_dir / rundir.ERROR_FILE).write_text(error)
    return trial_dir


def write_samples(checkpoint: Path, samples: dict[int, torch.Tensor] | Path) -> None:
    checkpoint.mkdir(parents=True, exist_ok=True)
    target = checkpoint / rundir.SAMPLES_FILE
    target.unlink(missing_ok=True)
    if isinstance(samples, Path):
        os.link(samples, target)
    else:
        torch.save(samples, target)


def ray_error(exception_line: str, failures: int = 1) -> str:
    """`error.txt` as Ray writes it for a trial whose function raised, `failures` times."""
    block = (
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=7876, ip=127.0.0.1, "
        "actor_id=c7e831ec4c5ab21f2a1f11a801000000, repr=train)\n"
        '  File "/site-packages/ray/tune/trainable/function_trainable.py", line 249, in '
        "_trainable_func\n    output = fn()\n             ^^^^\n"
        '  File "/work/main/ganlab/sweep.py", line 125, in train\n    trial = Trial(config)\n'
        "            ^^^^^^^^^^^^^\n"
        f"{exception_line}\n"
    )
    return "".join(
        f"Failure # {n} (occurred at 2027-01-15_08-00-{n:02d})\n{block}"
        for n in range(1, failures + 1)
    )


def full_disk(monkeypatch, failures: int) -> list:
    """The first `failures` parquet writes of the tables fail as on a full disk (ENOSPC);
    returns the list of the paths every write was tried at."""
    import errno

    from ganlab import tableparts

    real_write, tried = tableparts.pq.write_table, []

    def write(table, where, **kwargs):
        tried.append(where)
        if len(tried) <= failures:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(tableparts.pq, "write_table", write)
    return tried
