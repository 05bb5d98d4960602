"""What each trial field means: its group, meaning, unit, default and allowed values.

The one source of the README's field list and of `ganlab trial --help`: defaults come from
`TrialConfig`, the names a field takes from `config.named_choices` (its registry), the rest from
`FIELDS` below. `tests/test_cli_runs.py` fails when a field of `TrialConfig` has no entry here,
or when the README's list is not what `readme_list()` writes; `python -m ganlab.fieldhelp`
rewrites it.
"""

import dataclasses
import sys
from pathlib import Path
from typing import NamedTuple

from ganlab.config import TrialConfig, named_choices


class Field(NamedTuple):
    group: str
    meaning: str
    unit: str = ""  # what a number counts; "" for names and switches
    allowed: str = ""  # a rule on numbers; names and switches come from `named_choices`


DATA, ARCH, OBJECTIVE, OPTIM = "data", "architecture", "objective", "optimisation"
EVAL, STABILITY, NUMERICS = "evaluation", "stability", "numerics and execution"

FIELDS: dict[str, Field] = {
    "dataset": Field(DATA, "the data set"),
    "data_dir": Field(
        DATA, "where mnist, fashion-mnist and cifar10 are read from (torchvision's layout)"
    ),
    "download": Field(DATA, "let torchvision download missing data, where the network allows"),
    "arch": Field(ARCH, "the architecture of G and D"),
    "width": Field(ARCH, "hidden units (mlp) or base channels (dcgan, resnet)", "units", ">= 1"),
    "depth": Field(
        ARCH,
        "hidden layers of the mlp; convolutional architectures ignore it",
        "layers",
        "1 to 1,000",
    ),
    "z_dim": Field(ARCH, "dimension of G's latent noise", "dimensions", ">= 1"),
    "spectral_norm": Field(ARCH, "spectral normalisation of D's layers"),
    "norm_g": Field(ARCH, "G's normalisation layers"),
    "norm_d": Field(ARCH, "D's normalisation layers"),
    "pack": Field(
        ARCH, "PacGAN: D judges this many samples at once", "samples", ">= 1, dividing batch_size"
    ),
    "loss": Field(OBJECTIVE, "the GAN loss"),
    "clip": Field(
        OBJECTIVE,
        "WGAN weight clipping of D's weights to [-clip, clip]; 0 is off",
        "weight bound",
        ">= 0, > 0 only with loss wasserstein",
    ),
    "penalty": Field(OBJECTIVE, "gradient penalty on D, or a sum such as r1+r2 or r1+0.1*gp"),
    "penalty_weight": Field(OBJECTIVE, "the penalty's weight in D's loss", "", ">= 0"),
    "lr_g": Field(OPTIM, "G's Adam learning rate", "per step", "> 0"),
    "lr_d": Field(OPTIM, "D's Adam learning rate (TTUR: apart from G's)", "per step", "> 0"),
    "beta1": Field(OPTIM, "Adam's first-moment decay", "", "[0, 1)"),
    "beta2": Field(OPTIM, "Adam's second-moment decay", "", "[0, 1)"),
    "d_steps": Field(OPTIM, "D updates per G update", "D steps", ">= 1"),
    "batch_size": Field(OPTIM, "real and fake samples per update", "samples", ">= 1"),
    "steps": Field(OPTIM, "training length", "G updates", ">= 1"),
    "ema": Field(
        OPTIM,
        "decay of an exponential moving average of G's weights, which is evaluated; 0 is off",
        "per G update",
        "[0, 1)",
    ),
    "eval_every": Field(
        EVAL,
        "evaluate (and report, checkpoint, let ASHA judge) every so many steps, and at the last",
        "G updates",
        ">= 1",
    ),
    "n_eval": Field(
        EVAL, "fake samples per evaluation; empty: the data set's protocol", "samples", ">= 10"
    ),
    "n_eval_rung": Field(
        EVAL,
        "fake samples of every evaluation before the last; empty: n_eval",
        "samples",
        "10 to n_eval",
    ),
    "metric": Field(
        EVAL,
        "the metric the robust objective (median over seeds) is built from; "
        "`ganlab trial` without one: the data set's own (good_modes where it has "
        "modes and 2-D points, else fid)",
    ),
    "mode": Field(EVAL, "the metric's direction; must be the metric's own"),
    "seeds": Field(
        STABILITY,
        "the seeds trained in lockstep (`--seeds 0,1,2`, or one seed: `--seeds 5`)",
        "",
        "1 to 1,000 distinct integers >= 0",
    ),
    "max_grad_norm": Field(
        STABILITY, "a gradient norm above this marks the seed diverged", "", "> 0"
    ),
    "sample_keep": Field(
        STABILITY,
        "samples of each seed kept from the last evaluation, for the report",
        "samples",
        ">= 1",
    ),
    "device": Field(
        NUMERICS,
        "where the trial trains; auto: the card Ray gave it (any card outside Ray), else the CPU",
    ),
    "fp32_precision": Field(
        NUMERICS,
        "float32 matmuls and convolutions on a card: ieee (the same numbers everywhere) or tf32",
    ),
    "deterministic": Field(
        NUMERICS, "cuDNN's deterministic algorithms and torch's deterministic mode"
    ),
    "execution": Field(
        NUMERICS,
        "how the seeds train: one stacked model (batched), one after "
        "another (sequential), or auto (ganlab.execution.RULE)",
    ),
    "cuda_graphs": Field(NUMERICS, "replay the batched step as a CUDA graph (needs CUDA)"),
}

README = Path(__file__).parent.parent / "README.md"
BEGIN = "<!-- trial fields: written by `python -m ganlab.fieldhelp`; edit ganlab/fieldhelp.py -->"
END = "<!-- end of trial fields -->"


def default_text(name: str) -> str:
    """A field's default as a file would write it."""
    value = next(f.default for f in dataclasses.fields(TrialConfig) if f.name == name)
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def allowed_text(name: str) -> str:
    """What a field takes: its names, true/false, or its rule on numbers."""
    choices = named_choices()
    if name in choices:
        return ", ".join(choices[name])
    hint = next(f.type for f in dataclasses.fields(TrialConfig) if f.name == name)
    if hint is bool or hint == "bool":
        return "true, false"
    return FIELDS[name].allowed


def flag_help(name: str) -> str:
    """`ganlab trial --help`'s line of a field."""
    field = FIELDS[name]
    parts = [field.meaning, f"default {default_text(name)}"]
    if allowed := allowed_text(name):
        parts.append(f"allowed: {allowed}")
    if field.unit:
        parts.append(f"unit: {field.unit}")
    return "; ".join(parts)


def readme_list() -> str:
    """The README's table of trial fields, between its markers."""
    lines = [
        BEGIN,
        "",
        "| field | group | meaning | default | allowed | unit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in (f.name for f in dataclasses.fields(TrialConfig)):
        field = FIELDS[name]
        allowed = allowed_text(name).replace("|", "\\|")
        lines.append(
            f"| `{name}` | {field.group} | {field.meaning} | `{default_text(name)}` "
            f"| {allowed} | {field.unit} |"
        )
    return "\n".join([*lines, "", END])


def readme_block(text: str) -> str | None:
    """The field list in README text `text`, markers included; None where it has none."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(END)]


def write_readme(path: Path = README) -> bool:
    """Rewrite the README's field list; returns whether it changed."""
    text = path.read_text(encoding="utf-8")
    block = readme_block(text)
    if block is None:
        raise ValueError(f"{path}: no field list between {BEGIN!r} and {END!r}")
    new = text.replace(block, readme_list())
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    changed = write_readme()
    print(f"{README}: {'field list rewritten' if changed else 'field list up to date'}")
    sys.exit(0)
