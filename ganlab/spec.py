"""The sweep file schema: YAML in, a typed and fully validated `SweepSpec` out.

Everything is checked before Ray starts. A bad file raises `SpecError` naming the file, the field,
what was wrong and what is allowed; the CLI turns it into exit code 2 with nothing written.

Each dataclass of the schema has one reader, `from_raw(path, raw, ...)`, which takes the file's
value for it and checks every field on the way. Plain values go through `config.coerce`, the rule
the trial fields are read by, so a number or a list of seeds means the same in a sweep file as in
a trial's. `--smoke` reads the file as written first, then once more at its tiny sizes: a file
that cannot run at full size does not pass because --smoke replaced the part that was wrong.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganlab import budget, plugins
from ganlab.config import MAX_SEEDS, ConfigError, TrialConfig, check_seeds, coerce
from ganlab.metrics import METRICS, MODES
from ganlab.objective import check_direction
from ganlab.plugins import Plugin
from ganlab.rundir import RUNS
from ganlab.search import PBT_MUTABLE, SAMPLERS, SCHEDULERS, SEARCHLESS
from ganlab.trackers import TRACKERS
from ganlab.yamlfile import YamlError, read_yaml

PARAM_KINDS = ("choice", "uniform", "loguniform", "int")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TOP_LEVEL = (
    "name", "description", "base", "search", "seeds", "search_alg", "search_seed", "scheduler",
    "num_samples", "max_concurrent", "time_budget", "resources", "objective", "storage",
    "max_failures", "loggers", "smoke", "imports",
)  # fmt: skip
# --smoke shrinks a sweep to seconds: tiny networks, few steps, few samples. A file's own
# `smoke:` section is applied on top of these.
SMOKE_BASE = {"steps": 40, "eval_every": 20, "width": 16, "batch_size": 32, "n_eval": 200}
SMOKE_RUNG = 100  # a file's `n_eval_rung`, at most, so its smoke still has the two counts
SMOKE_TOP = {"num_samples": 2, "seeds": 2, "time_budget": None, "max_concurrent": 2}
SEARCH_SEED_LIMIT = 2**32  # Optuna's samplers seed numpy, which takes seeds below 2**32


class BadInput(ValueError):
    """Input a user gave that cannot run (exit code 2 at the command line, nothing written)."""


class SpecError(BadInput):
    """A sweep file that cannot run; the message names the file and the field."""

    def __init__(self, path: str | Path, field: str, message: str):
        super().__init__(f"{path}: {field}: {message}")
        self.path, self.field, self.message = str(path), field, message

    def __reduce__(self):  # pickles (a Ray worker's error) from its three arguments
        return type(self), (self.path, self.field, self.message)


@dataclass(frozen=True)
class Param:
    """One searched field: `kind` over `values` (choices, or the low and high bounds)."""

    name: str
    kind: str
    values: tuple[Any, ...]
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # exists only where these fields match

    @classmethod
    def from_raw(
        cls, path: Path, name: Any, raw: Any, search: dict[str, Any], base: dict[str, Any]
    ) -> "Param":
        """The file's `search.<name>` entry; every choice and both bounds must make a valid trial
        with `base` (trial fields with the objective) and the `when` fields set."""
        fields = {f.name for f in dataclasses.fields(TrialConfig)} - {"seeds", "metric", "mode"}
        where = f"search.{name}"
        if name not in fields:
            raise SpecError(
                path, where, f"not a trial field; allowed: {', '.join(sorted(fields))}"
            )
        if not isinstance(raw, dict):
            raise SpecError(
                path, where, f"must be a mapping with one of: {', '.join(PARAM_KINDS)}"
            )
        kinds = [k for k in raw if k in PARAM_KINDS]
        extra = [k for k in raw if k not in PARAM_KINDS and k != "when"]
        if len(kinds) != 1 or extra:
            raise SpecError(
                path, where, f"give exactly one of {', '.join(PARAM_KINDS)} (and `when`)"
            )
        kind = kinds[0]
        values = raw[kind]
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise SpecError(path, f"{where}.choice", "must be a non-empty list")
        else:
            values = _bounds(path, f"{where}.{kind}", kind, values)
        when = _when(path, f"{where}.when", raw.get("when"), search)
        param = cls(name, kind, tuple(values), when)
        param._check_values(path, base)
        return param

    def _check_values(self, path: Path, base: dict[str, Any]) -> None:
        context = {**base, **{other: wanted[0] for other, wanted in self.when}}
        for value in self.values:
            try:
                TrialConfig.from_dict({**context, self.name: value})
            except ConfigError as error:
                raise SpecError(
                    path, f"search.{self.name}", f"value {value!r}: {error.message}"
                ) from None


def _bounds(path: Path, where: str, kind: str, values: Any) -> list[float]:
    wanted = "integers" if kind == "int" else "numbers"
    if not isinstance(values, list) or len(values) != 2:
        raise SpecError(path, where, f"must be [low, high], two {wanted}; got {values!r}")
    hint = int if kind == "int" else int | float  # an int bound stays an int (Optuna's kinds)
    low, high = (
        _value(path, where, v, hint, f"[low, high], two {wanted}", values) for v in values
    )
    if not low < high:
        raise SpecError(path, where, f"low must be below high; got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise SpecError(path, where, f"log-uniform bounds must be positive; got [{low}, {high}]")
    return [low, high]


def _when(path: Path, where: str, raw: Any, search: dict[str, Any]):
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise SpecError(path, where, "must map a searched field to the value(s) it needs")
    conditions = []
    for other, wanted in raw.items():
        body = search.get(other)
        if not isinstance(body, dict) or "choice" not in body:
            raise SpecError(path, f"{where}.{other}", "must name a `choice` field of `search`")
        wanted = tuple(wanted) if isinstance(wanted, list) else (wanted,)
        unknown = [w for w in wanted if w not in body["choice"]]
        if unknown:
            choices = ", ".join(map(str, body["choice"]))
            raise SpecError(
                path, f"{where}.{other}", f"{unknown} not among its choices: {choices}"
            )
        conditions.append((other, wanted))
    return tuple(conditions)


@dataclass(frozen=True)
class Scheduler:
    name: str = "asha"
    # Training steps every trial gets before ASHA may stop it. None: not given, which `from_raw`
    # reads as one evaluation interval (min(eval_every, steps)), the least ASHA can judge by.
    grace_period: int | None = None
    reduction_factor: float = 3.0
    # PBT's (`ganlab.pbt`), None for other schedulers: the steps between exploits (by default
    # eval_every, and a multiple of it, as PBT acts on evaluations), the bottom share that
    # clones the top share, and how often a perturbed value is drawn anew instead of scaled.
    perturbation_interval: int | None = None
    quantile_fraction: float | None = None
    resample_probability: float | None = None

    @classmethod
    def from_raw(cls, path: Path, raw: Any, config: TrialConfig) -> "Scheduler":
        """The file's `scheduler` (a name, or a mapping) for trials like `config`."""
        if isinstance(raw, str):
            raw = {"name": raw}
        names = ", ".join(f"`{name}`" for name in SCHEDULERS)
        _mapping(path, "scheduler", raw, (f.name for f in dataclasses.fields(cls)),
                 f"must be {names} or a mapping with `name`")  # fmt: skip
        name = _choice(path, "scheduler.name", raw.get("name", cls.name), tuple(SCHEDULERS))
        if "grace_period" in raw:
            grace = _integer(path, "scheduler.grace_period", raw["grace_period"], 1)
        else:
            grace = min(config.eval_every, config.steps)
        if name == "asha" and grace > config.steps:
            raise SpecError(
                path, "scheduler.grace_period", f"{grace} exceeds base.steps ({config.steps})"
            )
        given = raw.get("reduction_factor", cls.reduction_factor)
        factor = _value(path, "scheduler.reduction_factor", given, float, "a number > 1")
        if factor <= 1:
            raise SpecError(
                path, "scheduler.reduction_factor", f"must be a number > 1; got {given!r}"
            )
        if name not in SEARCHLESS:
            for key in PBT_FIELDS:
                if key in raw:
                    raise SpecError(path, f"scheduler.{key}", "only for scheduler pbt")
            return cls(name, grace, factor)
        interval = _perturbation_interval(path, raw, config)
        quantile = _fraction(path, raw, "quantile_fraction", PBT_FIELDS["quantile_fraction"], 0.5)
        resample = _fraction(path, raw, "resample_probability",
                             PBT_FIELDS["resample_probability"], 1.0)  # fmt: skip
        return cls(name, grace, factor, interval, quantile, resample)


PBT_FIELDS = {"perturbation_interval": None, "quantile_fraction": 0.25,
              "resample_probability": 0.25}  # fmt: skip
"""A `pbt` scheduler's own fields and their defaults (None: eval_every)."""


def _perturbation_interval(path: Path, raw: dict[str, Any], config: TrialConfig) -> int:
    where = "scheduler.perturbation_interval"
    interval = _integer(path, where, raw.get("perturbation_interval", config.eval_every), 1)
    if interval % config.eval_every:
        raise SpecError(path, where, f"must be a multiple of base.eval_every "
                        f"({config.eval_every}), as PBT acts on evaluations; got "
                        f"{interval}")  # fmt: skip
    return interval


def _fraction(path: Path, raw: dict[str, Any], key: str, default: float, top: float) -> float:
    where, given = f"scheduler.{key}", raw.get(key, default)
    value = _value(path, where, given, float, f"a number from 0 to {top}")
    if not 0 <= value <= top:
        raise SpecError(path, where, f"must be a number from 0 to {top}; got {given!r}")
    return value


def _check_pbt(path: Path, raw: dict[str, Any], spec: "SweepSpec") -> None:
    """A `pbt` sweep searches only fields an exploit may change (`PBT_MUTABLE`), without
    `when`, and samples its population itself (no `search_alg` but `random`)."""
    if spec.scheduler.name not in SEARCHLESS:
        return
    allowed = ", ".join(PBT_MUTABLE)
    if not spec.search:
        raise SpecError(path, "search", f"scheduler pbt needs a searched field to perturb, of: "
                        f"{allowed}")  # fmt: skip
    for param in spec.search:
        where = f"search.{param.name}"
        if param.name not in PBT_MUTABLE:
            raise SpecError(path, where, f"scheduler pbt may change only fields that can "
                            f"change mid-training: {allowed}")  # fmt: skip
        if param.when:
            raise SpecError(path, f"{where}.when", "scheduler pbt takes no `when`: every "
                            "trial of a population has every searched field")  # fmt: skip
        if param.name == "ema" and min(param.values) <= 0:
            raise SpecError(path, where, "with scheduler pbt every value must be above 0: an "
                            "EMA of G cannot start or stop mid-training")  # fmt: skip
    if raw.get("search_alg", "random") != "random":
        raise SpecError(path, "search_alg", "scheduler pbt draws its population at random "
                        "(Ray's PBT takes no search algorithm): leave it out or give "
                        "random")  # fmt: skip


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0

    @classmethod
    def from_raw(cls, path: Path, raw: Any) -> "Resources":
        """The file's `resources` of one trial: CPUs and GPUs, fractions below 1 allowed."""
        names = [f.name for f in dataclasses.fields(cls)]
        _mapping(path, "resources", raw, names, "must be a mapping with `cpu` and/or `gpu`")
        values = {}
        for key, value in raw.items():
            where = f"resources.{key}"
            amount = _value(path, where, value, float, "a number >= 0")
            if amount < 0:
                raise SpecError(path, where, f"must be a number >= 0; got {value!r}")
            if amount > 1 and amount != int(amount):
                raise SpecError(path, where, f"fractions only below 1; got {value}")
            values[key] = amount
        resources = cls(**values)
        if resources.cpu == 0 and resources.gpu == 0:
            raise SpecError(path, "resources", "a trial needs some cpu or gpu")
        return resources


@dataclass(frozen=True)
class SweepSpec:
    path: str
    name: str
    base: dict[str, Any]  # fixed TrialConfig fields
    search: tuple[Param, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    search_alg: str = "optuna"
    search_seed: int = 0
    scheduler: Scheduler = field(default_factory=Scheduler)
    num_samples: int = 10
    max_concurrent: int = 2
    time_budget: float | None = None  # seconds for the whole sweep
    resources: Resources = field(default_factory=Resources)
    metric: str = "fid"
    mode: str = "min"
    storage: str = RUNS  # a local path, a shared file system or a cloud URI (s3://...)
    max_failures: int = 2  # retries of a trial whose worker died
    # The user's own code (`imports:`), imported before the rest of the file was read.
    plugins: tuple[Plugin, ...] = ()
    loggers: tuple[str, ...] = ("tensorboard",)  # trackers watching it (`ganlab.trackers`)

    @classmethod
    def from_raw(cls, path: Path, raw: dict[str, Any]) -> "SweepSpec":
        """The whole sweep file (a mapping), every field checked; raises SpecError."""
        _mapping(path, "file", raw, TOP_LEVEL,
                 "must be a mapping of sweep fields (name, base, search...)")  # fmt: skip
        imported = _imports(path, raw.get("imports"))  # first: they add names to the registries
        name = raw.get("name", path.stem)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise SpecError(path, "name", f"{name!r} must be letters, digits, '_', '-' or '.'")
        metric, mode = _objective(path, raw.get("objective", {}))
        base = _base(path, raw.get("base", {}), metric, mode)
        search = _search(path, raw.get("search", {}), {**base, "metric": metric, "mode": mode})
        search_alg = _choice(path, "search_alg", _given(raw, "search_alg"), tuple(SAMPLERS))
        num_samples = _integer(path, "num_samples", _given(raw, "num_samples"), 1)
        if search_alg == "grid":
            _check_grid(path, search)
            num_samples = math.prod(len(p.values) for p in search)  # every point, once
        seeds = _seeds(path, _given(raw, "seeds"))
        config = _trial(path, {**base, "seeds": list(seeds), "metric": metric, "mode": mode})
        spec = cls(
            path=str(path),
            name=name,
            base=base,
            search=search,
            seeds=seeds,
            search_alg=search_alg,
            search_seed=_search_seed(path, _given(raw, "search_seed")),
            scheduler=Scheduler.from_raw(path, raw.get("scheduler", Scheduler.name), config),
            num_samples=num_samples,
            max_concurrent=_integer(path, "max_concurrent", _given(raw, "max_concurrent"), 1),
            time_budget=_time_budget(path, raw.get("time_budget")),
            resources=Resources.from_raw(path, raw.get("resources", {})),
            metric=metric,
            mode=mode,
            storage=_storage(path, _given(raw, "storage")),
            max_failures=_integer(path, "max_failures", _given(raw, "max_failures"), 0),
            plugins=imported,
            loggers=_loggers(path, _given(raw, "loggers")),
        )
        _check_pbt(path, raw, spec)
        _check_placement(path, spec)
        _check_memory(path, spec)
        return spec

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        """The configuration a trial runs: base, then the searched values, then the seeds."""
        values = {**self.base, **params, "seeds": list(self.seeds)}
        return TrialConfig.from_dict({**values, "metric": self.metric, "mode": self.mode})

    def record(self) -> dict[str, Any]:
        """What Ray and Optuna were started with, as JSON values: a resumed sweep must match it
        (where the file is, where its results go and what watches it may differ)."""
        values = dataclasses.asdict(self)
        del values["path"], values["storage"], values["loggers"]
        # PBT's fields only where it is PBT: the record of any other sweep is as it always was.
        values["scheduler"] = {k: v for k, v in values["scheduler"].items() if v is not None}
        # A plugin by what it is called and its code's hash, wherever its file now lies.
        values["plugins"] = [{"module": p.module, "sha256": p.sha256} for p in self.plugins]
        return json.loads(json.dumps(values))

    @property
    def is_remote_storage(self) -> bool:
        return "://" in self.storage

    @property
    def storage_uri(self) -> str:
        """Where Ray keeps this sweep: `<storage>/<name>` (a URI, or a local path)."""
        return f"{self.storage.rstrip('/')}/{self.name}"


DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(SweepSpec)
    if f.default is not dataclasses.MISSING
}
"""What a sweep file may leave out: the `SweepSpec` field defaults, written once there."""


def _given(raw: dict[str, Any], key: str) -> Any:
    """The file's value of `key`, or the `SweepSpec` default where the file leaves it out."""
    if key in raw:
        return raw[key]
    default = DEFAULTS[key]
    return list(default) if isinstance(default, tuple) else default  # as a file would write it


# --- loading ------------------------------------------------------------------------------------


def load(
    path: str | Path,
    smoke: bool = False,
    num_samples: int | None = None,
    data_dir: str | None = None,
    storage: str | None = None,
) -> SweepSpec:
    """Read and validate a sweep file; command-line overrides are validated like the file and
    win over it. With `smoke`, the file is validated as written, then at --smoke's sizes (the
    overrides still on top)."""
    path = Path(path)
    raw = read_file(path)
    flags = (num_samples, data_dir, storage)
    spec = SweepSpec.from_raw(path, _overridden(raw, *flags) if isinstance(raw, dict) else raw)
    if not smoke:
        return spec
    smoked = _overridden(_smoked(path, raw), *flags)
    try:
        return SweepSpec.from_raw(path, smoked)
    except SpecError as error:
        raise _at_smoke(path, error, raw.get("smoke") or {}) from None


def _overridden(
    raw: dict[str, Any], num_samples: int | None, data_dir: str | None, storage: str | None
) -> dict[str, Any]:
    raw = dict(raw)
    if num_samples is not None:
        raw["num_samples"] = num_samples
    if data_dir is not None and isinstance(raw.get("base", {}), dict):  # else refused as base
        raw["base"] = {**raw.get("base", {}), "data_dir": data_dir}
    if storage is not None:
        raw["storage"] = storage
    return raw


def read_file(path: Path) -> Any:
    """A YAML file's contents; every problem is a SpecError naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise SpecError(path, "file", f"cannot read it ({error.strerror})") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise SpecError(path, "file", f"not UTF-8 text (byte {byte:#04x} at offset "
                        f"{error.start}); save it as UTF-8") from None  # fmt: skip
    try:
        return read_yaml(text)
    except YamlError as error:
        raise SpecError(path, error.field, error.message) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(path, "file", f"not valid YAML{where}: {problem}") from None


def _smoked(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The file at --smoke's sizes, with its own `smoke:` section on top of them."""
    own = raw.get("smoke") or {}
    allowed = [key for key in TOP_LEVEL if key not in ("smoke", "imports")]
    _mapping(path, "smoke", own, allowed, "must be a mapping of overrides")
    own_base = own.get("base") or {}
    if not isinstance(own_base, dict):
        raise SpecError(path, "smoke.base", "must be a mapping of trial fields")
    smoked = {**raw, **SMOKE_TOP, **{k: v for k, v in own.items() if k != "base"}}
    smoked["base"] = {**raw.get("base", {}), **SMOKE_BASE, **own_base}
    base = smoked["base"]  # the file was valid as written: its count is one
    if base.get("n_eval_rung") is not None and not {"n_eval", "n_eval_rung"} & set(own_base):
        base["n_eval_rung"] = min(int(base["n_eval_rung"]), SMOKE_RUNG)
    scheduler = smoked.get("scheduler")
    in_steps = ("grace_period", "perturbation_interval")
    if isinstance(scheduler, dict) and any(key in scheduler for key in in_steps):
        # A grace period (or a PBT interval) is in full-size steps: one evaluation interval.
        smoked["scheduler"] = {k: v for k, v in scheduler.items() if k not in in_steps}
    return smoked


def _at_smoke(path: Path, error: SpecError, own: dict[str, Any]) -> SpecError:
    """A problem only --smoke's sizes have: named in the file's `smoke:` section where that set
    the field, else said to come from the sizes --smoke gives."""
    parts = error.field.split(".")
    in_base = parts[0] == "base" and len(parts) > 1
    section, key = (own.get("base") or {}, parts[1]) if in_base else (own, parts[0])
    if key in section:
        return SpecError(path, f"smoke.{error.field}", error.message)
    sizes = ", ".join(f"{k} {v}" for k, v in {**SMOKE_TOP, **SMOKE_BASE}.items())
    return SpecError(path, error.field, f"{error.message} (at --smoke's sizes: {sizes}; the "
                     "file's `smoke:` section may set others)")  # fmt: skip


# --- the parts of a sweep file -----------------------------------------------------------------


def _mapping(path: Path, where: str, raw: Any, allowed: Any, what: str) -> None:
    """`raw` must be a mapping (else `what` is wrong) whose keys are all `allowed`."""
    if not isinstance(raw, dict):
        raise SpecError(path, where, what)
    allowed = tuple(allowed)
    prefix = "" if where == "file" else f"{where}."
    for key in raw:
        if key not in allowed:
            raise SpecError(
                path, f"{prefix}{key}", f"unknown field; allowed: {', '.join(allowed)}"
            )


def _imports(path: Path, raw: Any) -> tuple[Plugin, ...]:
    """The file's `imports`, imported (files relative to the sweep file)."""
    try:
        return plugins.load(raw, path.parent)
    except plugins.PluginImportError as error:
        raise SpecError(path, "imports", str(error)) from None
    except ValueError as error:
        raise SpecError(path, "imports", str(error).removeprefix("imports: ")) from None


def _check_placement(path: Path, spec: SweepSpec) -> None:
    """A trial on `cuda` needs a GPU from Ray. A zero-GPU trial sees every card of its node
    (Ray leaves CUDA_VISIBLE_DEVICES alone for it): on `cuda` it would train on a card no one
    gave it, beside the trials that were."""
    if spec.resources.gpu > 0:
        return
    allowed = ("give each trial a GPU (resources.gpu above 0; fractions share a card), or use "
               "device auto (a card only where Ray gives one) or cpu")  # fmt: skip
    if spec.base.get("device") == "cuda":
        raise SpecError(path, "base.device", f"'cuda' needs a GPU, but resources.gpu is 0: "
                        f"{allowed}")  # fmt: skip
    for param in spec.search:
        if param.name == "device" and "cuda" in param.values:
            raise SpecError(path, "search.device", f"choice 'cuda' needs a GPU, but "
                            f"resources.gpu is 0: {allowed}")  # fmt: skip


def _check_memory(path: Path, spec: SweepSpec) -> None:
    """The largest trial the search can make must fit some machine (`budget.CEILING`); whether
    it fits this one is the sweep's preflight (`budget.check_sweep`), not the file's."""
    problem = budget.over_ceiling(spec)
    if problem is not None:
        raise SpecError(path, budget.location(spec, problem.field), problem.message)


def _objective(path: Path, raw: Any) -> tuple[str, str]:
    _mapping(path, "objective", raw, ("metric", "mode"),
             "must be a mapping with `metric` and `mode`")  # fmt: skip
    metric = _choice(path, "objective.metric", _given(raw, "metric"), tuple(METRICS))
    default_mode = METRICS[metric].mode
    mode = _choice(path, "objective.mode", raw.get("mode", default_mode), MODES)
    problem = check_direction(metric, mode)
    if problem:
        raise SpecError(path, "objective.mode", problem)
    return metric, mode


def _base(path: Path, raw: Any, metric: str, mode: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpecError(path, "base", "must be a mapping of trial fields")
    for key in ("seeds", "metric", "mode"):
        if key in raw:
            where = "`seeds:`" if key == "seeds" else "`objective:`"
            raise SpecError(path, f"base.{key}", f"set it at the top level, in {where}")
    _trial(path, {**raw, "metric": metric, "mode": mode})
    return dict(raw)


def _trial(path: Path, values: dict[str, Any]) -> TrialConfig:
    """A trial of these fields; a ConfigError becomes a SpecError naming where the file set it."""
    try:
        return TrialConfig.from_dict(values)
    except ConfigError as error:
        where = error.field if error.field == "seeds" else f"base.{error.field}"
        raise SpecError(path, where, error.message) from None


def _search(path: Path, raw: Any, base: dict[str, Any]) -> tuple[Param, ...]:
    if not isinstance(raw, dict):
        raise SpecError(path, "search", "must be a mapping of field: {choice|uniform|...}")
    return tuple(Param.from_raw(path, name, body, raw, base) for name, body in raw.items())


def _check_grid(path: Path, search: tuple[Param, ...]) -> None:
    for param in search:
        if param.kind != "choice" or param.when:
            raise SpecError(
                path, f"search.{param.name}",
                "grid search takes plain `choice` fields only (no ranges, no `when`)",
            )  # fmt: skip


def _seeds(path: Path, raw: Any) -> tuple[int, ...]:
    """A count (seeds 0..n-1) or a list of seeds, by the trial's own rule (`check_seeds`)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= MAX_SEEDS:  # checked before the range is made
            raise SpecError(path, "seeds", f"must be at least 1 and at most {MAX_SEEDS:,} (seeds "
                            f"a trial); got {raw}")  # fmt: skip
        return tuple(range(raw))
    wanted = "a count or a list of integers"
    seeds = _value(path, "seeds", raw, tuple[int, ...], wanted)
    if not seeds:
        raise SpecError(path, "seeds", f"must be {wanted}; got {raw!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(path, "seeds", f"must be distinct; got {raw}")
    try:
        check_seeds(seeds)
    except ConfigError as error:
        raise SpecError(path, "seeds", error.message) from None
    return seeds


def _search_seed(path: Path, raw: Any) -> int:
    seed = _integer(path, "search_seed", raw, 0)
    if seed >= SEARCH_SEED_LIMIT:
        raise SpecError(path, "search_seed", f"must be below 2**32 (Optuna's samplers seed "
                        f"numpy with it); got {seed}")  # fmt: skip
    return seed


def _time_budget(path: Path, raw: Any) -> float | None:
    seconds = _value(path, "time_budget", raw, float | None, "seconds > 0 or null")
    if seconds is None:
        return None
    if not seconds > 0:
        raise SpecError(path, "time_budget", f"must be seconds > 0 or null; got {raw!r}")
    if not math.isfinite(seconds):
        raise SpecError(path, "time_budget", "must be finite (use null for no budget)")
    return seconds


def _loggers(path: Path, raw: Any) -> tuple[str, ...]:
    """Tracker names (`ganlab.trackers.TRACKERS`), each once; [] for none."""
    allowed = ", ".join(TRACKERS)
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise SpecError(path, "loggers", f"must be a list of tracker names ([] for none) of: "
                        f"{allowed}; got {raw!r}")  # fmt: skip
    for name in raw:
        if name not in TRACKERS:
            raise SpecError(path, "loggers", f"{name!r} is not one of: {allowed}")
    if len(set(raw)) != len(raw):
        raise SpecError(path, "loggers", f"names a tracker twice; got {raw}")
    return tuple(raw)


STORAGE_SCHEMES = ("s3", "gs", "gcs", "file")  # URIs Ray and pyarrow write to


def _storage(path: Path, raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise SpecError(path, "storage", "must be a local path or a URI such as s3://bucket/runs")
    scheme = raw.split("://", 1)[0] if "://" in raw else None
    if scheme is not None and scheme not in STORAGE_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
        raise SpecError(path, "storage", f"{raw!r}: scheme {scheme!r} is not supported; "
                        f"give a local path or a URI of {allowed}")  # fmt: skip
    return raw


# --- plain values -------------------------------------------------------------------------------


def _value(path: Path, where: str, value: Any, hint: Any, wanted: str, shown: Any = None) -> Any:
    """`value` as type `hint` by the trial fields' rule (`config.coerce`); otherwise a SpecError
    saying it must be `wanted` (and showing `shown`, by default the value)."""
    try:
        return coerce(where, value, hint)
    except ConfigError:
        shown = value if shown is None else shown
        raise SpecError(path, where, f"must be {wanted}; got {shown!r}") from None


def _choice(path: Path, where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(path, where, f"{value!r} is not one of: {', '.join(allowed)}")
    return value


def _integer(path: Path, where: str, value: Any, minimum: int) -> int:
    number = _value(path, where, value, int, f"an integer >= {minimum}")
    if number < minimum:
        raise SpecError(path, where, f"must be an integer >= {minimum}; got {value!r}")
    return number
