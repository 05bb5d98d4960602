"""The sweep file schema: YAML in, a typed and fully validated `SweepSpec` out.

Everything is checked before Ray starts. A bad file raises `SpecError` naming the file, the field,
what was wrong and what is allowed; the CLI turns it into exit code 2 with nothing written.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganlab.config import ConfigError, TrialConfig
from ganlab.metrics import METRICS, MODES
from ganlab.objective import check_direction
from ganlab.rundir import RUNS
from ganlab.search import SAMPLERS, SCHEDULERS
from ganlab.yamlfile import YamlError, read_yaml

PARAM_KINDS = ("choice", "uniform", "loguniform", "int")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TOP_LEVEL = (
    "name", "description", "base", "search", "seeds", "search_alg", "search_seed", "scheduler",
    "num_samples", "max_concurrent", "time_budget", "resources", "objective", "storage",
    "max_failures", "smoke",
)  # fmt: skip
# --smoke shrinks a sweep to seconds: tiny networks, few steps, few samples. A file's own
# `smoke:` section is applied on top of these.
SMOKE_BASE = {"steps": 40, "eval_every": 20, "width": 16, "batch_size": 32, "n_eval": 200}
SMOKE_TOP = {"num_samples": 2, "seeds": 2, "time_budget": None, "max_concurrent": 2}


class BadInput(ValueError):
    """Input a user gave that cannot run (exit code 2 at the command line, nothing written)."""


class SpecError(BadInput):
    """A sweep file that cannot run; the message names the file and the field."""

    def __init__(self, path: str | Path, field: str, message: str):
        super().__init__(f"{path}: {field}: {message}")
        self.path, self.field = str(path), field


@dataclass(frozen=True)
class Param:
    """One searched field: `kind` over `values` (choices, or the low and high bounds)."""

    name: str
    kind: str
    values: tuple[Any, ...]
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # exists only where these fields match


@dataclass(frozen=True)
class Scheduler:
    name: str = "asha"
    grace_period: int = 0  # steps every trial gets before ASHA may stop it; 0: one eval interval
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


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

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        """The configuration a trial runs: base, then the searched values, then the seeds."""
        values = {**self.base, **params, "seeds": list(self.seeds)}
        return TrialConfig.from_dict({**values, "metric": self.metric, "mode": self.mode})

    def record(self) -> dict[str, Any]:
        """What Ray and Optuna were started with, as JSON values: a resumed sweep must match it
        (where the file is and where its results go may differ)."""
        values = dataclasses.asdict(self)
        del values["path"], values["storage"]
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


def load(
    path: str | Path,
    smoke: bool = False,
    num_samples: int | None = None,
    data_dir: str | None = None,
    storage: str | None = None,
) -> SweepSpec:
    """Read and validate a sweep file; command-line overrides are validated like the file."""
    path = Path(path)
    raw = _read_yaml(path)
    if smoke:
        raw = _apply_smoke(path, raw)
    if num_samples is not None:
        raw["num_samples"] = num_samples
    if data_dir is not None:
        raw.setdefault("base", {})["data_dir"] = data_dir
    if storage is not None:
        raw["storage"] = storage
    return _build(path, raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    raw = read_file(path)
    if not isinstance(raw, dict):
        raise SpecError(path, "file", "must be a mapping of sweep fields (name, base, search...)")
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


def _apply_smoke(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    own = raw.get("smoke") or {}
    if not isinstance(own, dict):
        raise SpecError(path, "smoke", "must be a mapping of overrides")
    raw = {**raw, **SMOKE_TOP, **{k: v for k, v in own.items() if k != "base"}}
    raw["base"] = {**(raw.get("base") or {}), **SMOKE_BASE, **(own.get("base") or {})}
    scheduler = raw.get("scheduler")
    if isinstance(scheduler, dict) and "grace_period" in scheduler:
        raw["scheduler"] = {**scheduler, "grace_period": raw["base"]["eval_every"]}
    return raw


def _build(path: Path, raw: dict[str, Any]) -> SweepSpec:
    for key in raw:
        if key not in TOP_LEVEL:
            raise SpecError(path, key, f"unknown field; allowed: {', '.join(TOP_LEVEL)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(path, "name", f"{name!r} must be letters, digits, '_', '-' or '.'")
    metric, mode = _objective(path, raw.get("objective", {}))
    base = _base(path, raw.get("base", {}), metric, mode)
    search = _search(path, raw.get("search", {}), base, metric, mode)
    search_alg = _choice(path, "search_alg", _given(raw, "search_alg"), tuple(SAMPLERS))
    num_samples = _integer(path, "num_samples", _given(raw, "num_samples"), 1)
    if search_alg == "grid":
        _check_grid(path, search)
        num_samples = math.prod(len(p.values) for p in search)  # every point, once
    spec = SweepSpec(
        path=str(path),
        name=name,
        base=base,
        search=search,
        seeds=_seeds(path, _given(raw, "seeds")),
        search_alg=search_alg,
        search_seed=_integer(path, "search_seed", _given(raw, "search_seed"), 0),
        scheduler=_scheduler(path, raw.get("scheduler", Scheduler.name), base),
        num_samples=num_samples,
        max_concurrent=_integer(path, "max_concurrent", _given(raw, "max_concurrent"), 1),
        time_budget=_time_budget(path, raw.get("time_budget")),
        resources=_resources(path, raw.get("resources", {})),
        metric=metric,
        mode=mode,
        storage=_storage(path, _given(raw, "storage")),
        max_failures=_integer(path, "max_failures", _given(raw, "max_failures"), 0),
    )
    spec.trial_config({})  # base + seeds + objective form a valid trial on their own
    return spec


def _objective(path: Path, raw: Any) -> tuple[str, str]:
    if not isinstance(raw, dict):
        raise SpecError(path, "objective", "must be a mapping with `metric` and `mode`")
    for key in raw:
        if key not in ("metric", "mode"):
            raise SpecError(path, f"objective.{key}", "unknown field; allowed: metric, mode")
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
    try:
        TrialConfig.from_dict({**raw, "metric": metric, "mode": mode})
    except ConfigError as error:
        raise SpecError(path, f"base.{error.field}", error.message) from None
    return dict(raw)


def _search(
    path: Path, raw: Any, base: dict[str, Any], metric: str, mode: str
) -> tuple[Param, ...]:
    if not isinstance(raw, dict):
        raise SpecError(path, "search", "must be a mapping of field: {choice|uniform|...}")
    fields = {f.name for f in dataclasses.fields(TrialConfig)} - {"seeds", "metric", "mode"}
    params = []
    for name, body in raw.items():
        where = f"search.{name}"
        if name not in fields:
            raise SpecError(
                path, where, f"not a trial field; allowed: {', '.join(sorted(fields))}"
            )
        param = _param(path, where, name, body, raw)
        _check_values(path, where, param, base, metric, mode)
        params.append(param)
    return tuple(params)


def _param(path: Path, where: str, name: str, body: Any, search: dict[str, Any]) -> Param:
    if not isinstance(body, dict):
        raise SpecError(path, where, f"must be a mapping with one of: {', '.join(PARAM_KINDS)}")
    kinds = [k for k in body if k in PARAM_KINDS]
    extra = [k for k in body if k not in PARAM_KINDS and k != "when"]
    if len(kinds) != 1 or extra:
        raise SpecError(path, where, f"give exactly one of {', '.join(PARAM_KINDS)} (and `when`)")
    kind = kinds[0]
    values = body[kind]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise SpecError(path, f"{where}.choice", "must be a non-empty list")
    else:
        values = _bounds(path, f"{where}.{kind}", kind, values)
    return Param(name, kind, tuple(values), _when(path, f"{where}.when", body.get("when"), search))


def _bounds(path: Path, where: str, kind: str, values: Any) -> list[float]:
    numeric = int if kind == "int" else (int, float)
    ok = isinstance(values, list) and len(values) == 2
    if not ok or not all(isinstance(v, numeric) and not isinstance(v, bool) for v in values):
        wanted = "integers" if kind == "int" else "numbers"
        raise SpecError(path, where, f"must be [low, high], two {wanted}; got {values!r}")
    low, high = values
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


def _check_values(
    path: Path, where: str, param: Param, base: dict[str, Any], metric: str, mode: str
) -> None:
    """Each choice and both bounds must make a valid trial (with its `when` fields set)."""
    context = {**base, **{other: wanted[0] for other, wanted in param.when}}
    for value in param.values:
        try:
            TrialConfig.from_dict({**context, param.name: value, "metric": metric, "mode": mode})
        except ConfigError as error:
            raise SpecError(path, where, f"value {value!r}: {error.message}") from None


def _check_grid(path: Path, search: tuple[Param, ...]) -> None:
    for param in search:
        if param.kind != "choice" or param.when:
            raise SpecError(
                path, f"search.{param.name}",
                "grid search takes plain `choice` fields only (no ranges, no `when`)",
            )  # fmt: skip


def _scheduler(path: Path, raw: Any, base: dict[str, Any]) -> Scheduler:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        names = ", ".join(f"`{name}`" for name in SCHEDULERS)
        raise SpecError(path, "scheduler", f"must be {names} or a mapping with `name`")
    allowed = ("name", "grace_period", "reduction_factor")
    for key in raw:
        if key not in allowed:
            raise SpecError(
                path, f"scheduler.{key}", f"unknown field; allowed: {', '.join(allowed)}"
            )
    name = _choice(path, "scheduler.name", raw.get("name", Scheduler.name), tuple(SCHEDULERS))
    config = TrialConfig.from_dict({**base, "seeds": [0]})
    default_grace = min(config.eval_every, config.steps)
    grace = _integer(path, "scheduler.grace_period", raw.get("grace_period", default_grace), 1)
    if name == "asha" and grace > config.steps:
        raise SpecError(
            path, "scheduler.grace_period", f"{grace} exceeds base.steps ({config.steps})"
        )
    factor = raw.get("reduction_factor", Scheduler.reduction_factor)
    if not isinstance(factor, int | float) or isinstance(factor, bool) or factor <= 1:
        raise SpecError(
            path, "scheduler.reduction_factor", f"must be a number > 1; got {factor!r}"
        )
    return Scheduler(name, grace, float(factor))


def _resources(path: Path, raw: Any) -> Resources:
    if not isinstance(raw, dict):
        raise SpecError(path, "resources", "must be a mapping with `cpu` and/or `gpu`")
    values = {}
    for key, value in raw.items():
        if key not in ("cpu", "gpu"):
            raise SpecError(path, f"resources.{key}", "unknown field; allowed: cpu, gpu")
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise SpecError(path, f"resources.{key}", f"must be a number >= 0; got {value!r}")
        if value > 1 and value != int(value):
            raise SpecError(path, f"resources.{key}", f"fractions only below 1; got {value}")
        values[key] = float(value)
    resources = Resources(**values)
    if resources.cpu == 0 and resources.gpu == 0:
        raise SpecError(path, "resources", "a trial needs some cpu or gpu")
    return resources


def _seeds(path: Path, raw: Any) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise SpecError(path, "seeds", f"must be at least 1; got {raw}")
        return tuple(range(raw))
    if isinstance(raw, list) and raw and all(isinstance(s, int) for s in raw):
        if len(set(raw)) != len(raw):
            raise SpecError(path, "seeds", f"must be distinct; got {raw}")
        return tuple(raw)
    raise SpecError(path, "seeds", f"must be a count or a list of integers; got {raw!r}")


def _time_budget(path: Path, raw: Any) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not raw > 0:
        raise SpecError(path, "time_budget", f"must be seconds > 0 or null; got {raw!r}")
    if not math.isfinite(raw):
        raise SpecError(path, "time_budget", "must be finite (use null for no budget)")
    return float(raw)


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


def _choice(path: Path, where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(path, where, f"{value!r} is not one of: {', '.join(allowed)}")
    return value


def _integer(path: Path, where: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SpecError(path, where, f"must be an integer >= {minimum}; got {value!r}")
    return value
