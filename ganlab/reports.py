"""What a trial reports at each evaluation, typed: the one contract from the trial to the tables.

`Trial.evaluate()` returns an `EvalReport` (one `SeedReport` per seed). The sweep adds its
`RunContext` and hands both to Ray as one flat JSON-able dict (`to_dict`); Ray writes it as a
line of the trial's result.json, with keys of its own. The collector reads each line back as a
`ResultLine` (`from_dict`), which ignores Ray's keys but raises `ReportError`, naming the key, on
a missing or unknown key of ours: a renamed field fails the collection instead of writing blanks.

The dicts keep the layout of result.json as it always was, so older run directories collect:
a seed's metrics, its `collapsed` flag and its signals side by side with `diverged` (and
`diverged_step` once it has diverged), seeds keyed by their number as a string.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ganlab.metrics import METRICS

SIGNALS = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")
"""A seed's training signals (means over the steps since the previous evaluation), in the order
of the metrics table's columns. G's signals end in `_g`, D's do not."""


class ReportError(ValueError):
    """A report that does not hold what this contract says it holds."""


@dataclass(frozen=True)
class SeedReport:
    """One seed at one evaluation.

    A live seed has the metrics its data set defines (`ganlab.metrics.METRICS` names,
    `good_modes` among them where the data set has modes), the means of its training signals
    since the previous evaluation (none at step 0) and, where the data set has modes, whether it
    collapsed. A diverged seed has the step it diverged at, and is measured no more.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)
    collapsed: bool | None = None  # None: the data set defines no modes (or it diverged)
    diverged_step: int | None = None  # None while the seed trains

    def __post_init__(self) -> None:
        _check_names(self.metrics, METRICS, "metric")
        _check_names(self.signals, SIGNALS, "signal")

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        if self.collapsed is not None:
            out["collapsed"] = self.collapsed
        out.update(self.signals)
        out["diverged"] = self.diverged
        if self.diverged:
            out["diverged_step"] = self.diverged_step
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "seed") -> "SeedReport":
        unknown = [k for k in d if k not in METRICS and k not in SIGNALS and k not in _SEED_KEYS]
        if unknown:
            raise ReportError(f"{where}: unknown key(s) {unknown}; a seed holds metrics "
                              f"{list(METRICS)}, signals {list(SIGNALS)} and "
                              f"{list(_SEED_KEYS)}")  # fmt: skip
        diverged_step = None
        if _take(d, "diverged", where):
            diverged_step = _take(d, "diverged_step", where)
            if diverged_step is None:
                raise ReportError(f"{where}: diverged, but its 'diverged_step' is null")
        return cls(
            metrics={k: v for k, v in d.items() if k in METRICS},
            signals={k: v for k, v in d.items() if k in SIGNALS},
            collapsed=d.get("collapsed"),  # an optional key: only where the data has modes
            diverged_step=diverged_step,
        )


_SEED_KEYS = ("collapsed", "diverged", "diverged_step")


@dataclass(frozen=True)
class EvalReport:
    """One evaluation of a trial: every seed at the same step, and the trial's summary of them."""

    step: int
    objective: float  # robust over the seeds, always finite (`ganlab.objective`)
    div_rate: float  # share of the seeds diverged
    collapse_rate: float  # share of the seeds collapsed
    wall_s: float  # the trial's time so far, training and evaluation
    samples_per_s: float  # training throughput over all seeds
    device: str
    protocol: str  # the evaluation protocol as JSON (`ganlab.metrics.Protocol.to_json`)
    last: bool  # the trial's last report: every step done, or every seed diverged
    seeds: dict[int, SeedReport]
    device_name: str = ""  # the card's name ("NVIDIA H200"), "cpu" or "meta"
    execution: str = ""  # how the seeds trained: `batched` or `sequential` (`ganlab.execution`)
    # Each time a checkpoint moved between device types and the random streams were reseeded:
    # {"step": int, "from": device type, "to": device type}.
    reseeds: list[dict[str, Any]] = field(default_factory=list)
    # The clones behind the trial's weights (Population Based Training's exploits), oldest
    # first, those of the trials it was cloned from included: {"step": the checkpoint's step,
    # "trial": the trial cloned into, "from_trial": the one cloned, "changed": {field: [old,
    # new]}}.
    exploits: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seeds"}
        if not out["exploits"]:  # a line without exploits keeps the layout lines always had
            del out["exploits"]
        out["seeds"] = {str(seed): report.to_dict() for seed, report in self.seeds.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "report") -> "EvalReport":
        """The report in `d`; other keys (Ray's, the sweep's) are ignored."""
        values = {
            f.name: _take(d, f.name, where) if f.name not in _OPTIONAL else d.get(f.name)
            for f in fields(cls)
            if f.name != "seeds"
        }
        # Keys added later have defaults: result.json lines written before them still read.
        values = {k: v for k, v in values.items() if k not in _OPTIONAL or v is not None}
        seeds = {
            int(seed): SeedReport.from_dict(report, f"{where}, seed {seed}")
            for seed, report in _take(d, "seeds", where).items()
        }
        return cls(**values, seeds=seeds)


# EvalReport's keys that older lines lack
_OPTIONAL = ("device_name", "execution", "reseeds", "exploits")


@dataclass(frozen=True)
class RunContext:
    """What the sweep adds to every report of a trial: where and when it ran."""

    trial_config: dict[str, Any]  # `TrialConfig.to_dict()`
    node_id: str  # Ray's id of the node that ran it
    started_at: float  # Unix time this attempt of the trial started
    reported_at: float  # Unix time of the report
    resumed_from_step: int | None  # the checkpoint's step this attempt went on from
    plugins: str = ""  # the user's code it ran with (`ganlab.plugins.describe`); "" for none

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if not values["plugins"]:  # a line without plugins keeps the layout lines always had
            del values["plugins"]
        return values

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "report") -> "RunContext":
        names = [f.name for f in fields(cls) if f.name in d or f.name not in _OLDER_CONTEXT]
        return cls(**{name: _take(d, name, where) for name in names})


_OLDER_CONTEXT = ("plugins",)  # RunContext's keys that older lines lack (their defaults hold)


@dataclass(frozen=True)
class ResultLine:
    """One line of a trial's result.json: its report, the sweep's context, and Ray's trial id
    and node address. Ray's other keys are not read."""

    report: EvalReport
    context: RunContext
    trial_id: str  # Ray's
    node_ip: str  # Ray's: the address of the node that ran it

    def to_dict(self) -> dict[str, Any]:
        ray_keys = {"trial_id": self.trial_id, "node_ip": self.node_ip}
        return {**self.report.to_dict(), **self.context.to_dict(), **ray_keys}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "result") -> "ResultLine":
        return cls(
            report=EvalReport.from_dict(d, where),
            context=RunContext.from_dict(d, where),
            trial_id=_take(d, "trial_id", where),  # Ray's keys, in every line it writes
            node_ip=_take(d, "node_ip", where),
        )


def _take(d: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise ReportError(f"{where} has no {key!r}") from None


def _check_names(values: Mapping[str, float], names: Any, kind: str) -> None:
    unknown = [name for name in values if name not in names]
    if unknown:
        raise ReportError(f"unknown {kind}(s) {unknown}; known: {list(names)}")
