"""The public API for your own losses, penalties, architectures, datasets and metrics.

A plugin is a Python file (or an importable module) named in a sweep file's `imports:` (or
`ganlab trial --imports`). It registers what it defines with these decorators; the names then
mean in sweep files what the built-in names mean, and are checked the same way:

    from ganlab import register

    @register.loss("my-loss")
    def my_loss(d_real, d_fake):            # raw logits in, (d_loss, g_loss) out
        ...

    @register.penalty("my-penalty")         # fn(d, real, fake, generator) -> scalar
    def my_penalty(d, real, fake, generator):
        ...

    def shapes(shape):                      # what is wrong with data of `shape`, or None
        return None if len(shape) == 1 else "needs flat data"

    @register.architecture("my-gan", shapes)
    def my_gan(cfg, shape):                 # cfg: ganlab.models.ArchConfig -> (G, D)
        ...

    @register.dataset("my-data", shape=(2,), modes=0, extractor="raw", n_eval=1000)
    def my_data(data_dir, download):        # -> fields of ganlab.data.Data (train, ...)
        ...

    @register.metric("mean_nn", mode="min", worst=1e5, doc="mean distance to the nearest real")
    def mean_nn(fake, features, data):      # fakes (N, *shape), features (N, d) -> 0-d tensor
        real = ganlab.data.to_float(data.test).flatten(1).to(fake.device)
        return torch.cdist(fake.flatten(1), real).min(1).values.mean()

Each decorator checks what it is given when the plugin is imported (a signature, a name), so
a mistake stops the sweep before Ray starts (exit 2, naming the file and the line). A name
already registered, built-in or not, is refused. Trials of a plugin's penalty train their seeds
one after the other unless it gives its `batched` form (see `ganlab.batched`), and those of a
plugin's architecture train so too (`ganlab.execution.RULE` names the built-in ones).

A metric is measured at every evaluation of every trial, after the built-ins, on the device the
trial evaluates on, and may be the objective (`objective: {metric: mean_nn, mode: min}`). Its
name is its column in the metrics table (`final_<name>` and `best_<name>` in the trials table),
so it may not be a column's name already; each table file records the plugin metrics it holds
(mode, worst, doc), so the tables read back where the plugin is not installed. A non-finite
value counts as `worst` (finite, worse than any real value, as a diverged seed's); a metric
that raises fails its trial, not retried, with its message in the row's `error`.
"""

import inspect
import math
import re
from collections.abc import Callable
from numbers import Real
from typing import Any, TypeVar

from ganlab import data as _data
from ganlab import losses as _losses
from ganlab import metrics as _metrics
from ganlab import models as _models
from ganlab import penalties as _penalties
from ganlab.registry import register as _register

F = TypeVar("F", bound=Callable[..., Any])
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")  # no '+' or '*': those write sums of penalties
DATA_FIELDS = ("train", "train_labels", "test", "test_labels", "centres", "sigma")
"""What a dataset's reader may return: the `ganlab.data.Data` fields a loader fills."""


class PluginError(ValueError):
    """A plugin registered something that cannot work; the message says what and why."""


def loss(name: str) -> Callable[[F], F]:
    """Register `fn(d_real, d_fake) -> (d_loss, g_loss)` under `name` (`ganlab.losses`)."""
    return _adder(name, "loss", ("d_real", "d_fake"), _losses.LOSSES)


def penalty(name: str, batched: Callable | None = None) -> Callable[[F], F]:
    """Register `fn(d, real, fake, generator) -> scalar` under `name` (`ganlab.penalties`).
    `batched(stacked_d, real, fake, generators) -> (K,)`, where given, is its form for the
    batched execution (`ganlab.batched.BATCHED_PENALTIES`), with the same draws per seed."""
    add = _adder(name, "penalty", ("d", "real", "fake", "generator"), _penalties.PENALTIES)

    def both(fn: F) -> F:
        if batched is not None:
            from ganlab.batched import BATCHED_PENALTIES

            _check_signature(name, "batched penalty", batched, ("d", "real", "fake", "rngs"))
            add(fn)
            _register(BATCHED_PENALTIES, name)(batched)
            return fn
        return add(fn)

    return both


def architecture(name: str, shapes: Callable[[tuple[int, ...]], str | None]) -> Callable[[F], F]:
    """Register `builder(cfg, shape) -> (G, D)` under `name` (`ganlab.models`), with
    `shapes(shape)`: None where the architecture models samples of `shape`, else what it needs
    (said in the error a sweep file gets). The shape contract is the built-ins': G maps
    (N, cfg.z_dim) noise to (N, *shape), D maps (N * cfg.pack, *shape) packed along dim 1 to
    (N,) raw logits; `ganlab.models.build` adds packing and spectral norm."""
    _check_signature(name, "architecture's shape check", shapes, ("shape",))
    add = _adder(name, "architecture", ("cfg", "shape"), _models.ARCHITECTURES)

    def both(builder: F) -> F:
        add(builder)
        _register(_models.SHAPE_PROBLEMS, name)(shapes)
        return builder

    return both


def dataset(
    name: str, shape: tuple[int, ...], modes: int, extractor: str, n_eval: int
) -> Callable[[F], F]:
    """Register `read(data_dir, download) -> {field: value}` under `name` (`ganlab.data`): the
    fields of `DATA_FIELDS` it fills (images, uint8 [0, 255] or float [-1, 1], as (N, *shape);
    or 2-D mixture `centres` and `sigma`). `modes` counts the modes the protocol reads (0:
    none; 2-D mixtures only, for a plugin), `extractor` is `raw` for flat data or `inception`
    for RGB images; `n_eval` samples per evaluation."""
    _check_name(name, "dataset")
    shape = tuple(shape)
    if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise PluginError(f"dataset {name!r}: shape must be positive integers, got {shape}")
    if extractor not in ("raw", "inception"):
        raise PluginError(f"dataset {name!r}: extractor must be 'raw' or 'inception' (the "
                          "classifier is trained for digit-like data only), got "
                          f"{extractor!r}")  # fmt: skip
    if modes and extractor != "raw":
        raise PluginError(f"dataset {name!r}: modes are counted on 2-D mixtures only; give 0")
    register = _data.dataset(name, shape, modes, extractor, n_eval)

    def add(read: F) -> F:
        _check_signature(name, "dataset", read, ("data_dir", "download"))
        register(_checked_reader(name, shape, read))
        return read

    return add


def metric(name: str, mode: str, worst: float, doc: str = "") -> Callable[[F], F]:
    """Register `fn(fake, features, data) -> 0-d tensor` under `name` (`ganlab.metrics`):
    `fake`, the evaluation's (n_eval, *shape) samples on the evaluator's device; `features`,
    the protocol extractor's (n_eval, d) features of them; `data`, the `ganlab.data.Data`
    (real samples in `test`, `train`). `mode` is its direction (`ganlab.metrics.MODES`),
    `worst` the finite value a diverged seed, or a non-finite value, counts as (worse than
    any real one), `doc` what it measures (default: the first line of fn's docstring)."""
    _check_name(name, "metric")
    if name in _metrics.METRICS:
        raise PluginError(f"metric {name!r} is already registered")
    if name in _reserved_columns():
        raise PluginError(f"metric {name!r}: a column of the results tables has that name "
                          "already; choose another")  # fmt: skip
    if mode not in _metrics.MODES:
        raise PluginError(f"metric {name!r}: mode must be one of {', '.join(_metrics.MODES)}, "
                          f"got {mode!r}")  # fmt: skip
    if isinstance(worst, bool) or not isinstance(worst, Real) or not math.isfinite(worst):
        raise PluginError(f"metric {name!r}: worst must be a finite number (what a diverged "
                          f"seed counts as), got {worst!r}")  # fmt: skip
    if not isinstance(doc, str):
        raise PluginError(f"metric {name!r}: doc must be a string, got {doc!r}")

    def add(fn: F) -> F:
        _check_signature(name, "metric", fn, ("fake", "features", "data"))
        said = doc or next(iter((inspect.getdoc(fn) or "").splitlines()), "")
        _register(_metrics.METRICS, name)(_metrics.Metric(mode, float(worst), said, measure=fn))
        return fn

    return add


def _reserved_columns() -> set[str]:
    """Names a metric may not take: the tables' columns (and `load`'s `phase`), and
    `collapsed`, which a seed's report holds beside its metrics."""
    from ganlab.results import METRIC_COLUMNS, TRIAL_COLUMNS

    return {*METRIC_COLUMNS, *TRIAL_COLUMNS, "phase", "collapsed"}


def _checked_reader(name: str, shape: tuple[int, ...], read: Callable) -> Callable:
    def checked(data_dir: str, download: bool) -> dict[str, Any]:
        fields = read(data_dir, download)
        if not isinstance(fields, dict):
            raise PluginError(
                f"dataset {name!r}: its reader must return a dict of "
                f"{', '.join(DATA_FIELDS)}; got {type(fields).__name__}"
            )
        unknown = [key for key in fields if key not in DATA_FIELDS]
        if unknown:
            raise PluginError(f"dataset {name!r}: unknown field(s) {unknown}; allowed: "
                              f"{', '.join(DATA_FIELDS)}")  # fmt: skip
        for key in ("train", "test"):
            value = fields.get(key)
            if value is not None and tuple(value.shape[1:]) != shape:
                raise PluginError(f"dataset {name!r}: {key} has samples of shape "
                                  f"{tuple(value.shape[1:])}, registered as {shape}")  # fmt: skip
        if fields.get("train") is None and fields.get("centres") is None:
            raise PluginError(f"dataset {name!r}: its reader gave neither train nor centres")
        return fields

    checked.__wrapped__ = read
    return checked


def _adder(name: str, kind: str, params: tuple[str, ...], registry: dict) -> Callable[[F], F]:
    _check_name(name, kind)

    def add(fn: F) -> F:
        _check_signature(name, kind, fn, params)
        return _register(registry, name)(fn)

    return add


def _check_name(name: Any, kind: str) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise PluginError(f"{kind} name {name!r}: must start with a letter, then letters, "
                          "digits, '_', '-' or '.'")  # fmt: skip


def _check_signature(name: str, kind: str, fn: Any, params: tuple[str, ...]) -> None:
    """`fn` must take exactly len(params) positional arguments (names are free)."""
    if not callable(fn):
        raise PluginError(f"{kind} {name!r}: {fn!r} is not callable")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trusted
    try:
        signature.bind(*params)
    except TypeError as error:
        wanted = f"fn({', '.join(params)})"
        raise PluginError(f"{kind} {name!r}: {fn.__name__}{signature} cannot be called as "
                          f"{wanted}: {error}") from None  # fmt: skip
