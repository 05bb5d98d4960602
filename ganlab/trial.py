"""One trial: one GAN configuration trained over K seeds in lockstep, measured honestly.

The trial knows nothing of Ray. It takes a typed configuration and a `report(result)` callback,
evaluates every `eval_every` steps, and exposes its whole state through `state_dict()` and
`load_state_dict()`, so a restored trial continues bit-identically on the CPU.

Stability is measured, never crashed on: a seed whose losses, gradients, weights or samples become
non-finite, or whose gradient norm explodes, is marked diverged at that step and stops while the
other seeds go on. The objective handed to schedulers and searchers is always finite.

Device: every tensor of a trial lives on its device (data, networks, optimiser state, random
generators, training signals), and a training step never reads a value back to the host, so a
card runs the steps between two evaluations without waiting for Python. Divergence is therefore
decided on the device: before each optimiser step, the step's losses, logits and gradient norm
are checked there, a failing seed is flagged `dead` with its step recorded, and the fused Adam
kernels skip every later update of a dead seed (their `found_inf` input, as under AMP's
GradScaler), as does its EMA. The host reads the flags at the next evaluation and from then on
trains the seed no more; until then its forward and backward passes run to no effect, except that
BatchNorm running statistics and spectral-norm power iterations go on moving. A diverged seed is
never evaluated again.

Execution: the seeds train one after another at each step (`sequential`), or as one stacked
model whose every layer has a seed dimension (`batched`, `ganlab.batched`), as `execution` says
(`auto`: `ganlab.execution.RULE`, per device type and architecture). Each seed's numbers are the
same either way up to float rounding: its own draws, weights, Adam state, EMA, signals and fate.
The seeds' own modules and optimisers stay the trial's record, copied into the stacked model
before a batched `train` call and back after it, so evaluation, checkpoints (per seed) and
resumption are those of either execution. Evaluation measures all live seeds together: one
generator pass, one extractor pass, one read.

Numerics: training runs in the configured `fp32_precision` and, if `deterministic`, with
deterministic algorithms (`devices.numerics`); evaluation in IEEE float32 with the same
determinism. Both are process-global, so they are set for each `train` and `evaluate` call and put
back after it: trials that take turns in one process each get their own.

Checkpoints move between devices. A seed's random states are saved with the device type of the
generator that wrote them; loaded into a generator of another type (a card's checkpoint into a
CPU or `meta` trial, whose generators are CPU ones, or back), they cannot be restored, so each
stream is reseeded from (seed, step, stream) (`devices.reseed_value`), and the trial records the
move in `reseeds` (kept in its state and carried by every later report).

Checkpoints move between configurations only in the fields a caller allows (`load_state_dict`'s
`mutable`: Population Based Training's exploits, `ganlab.search.PBT_MUTABLE`): the weights, step
and history are the checkpoint's, the learning rates, betas, EMA decay and penalty weight this
trial's. The clones behind a trial's weights are in `exploits`, kept and carried like `reseeds`.
"""

import copy
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ganlab import data as datasets
from ganlab import execution, initial, models, penalties
from ganlab.batched import BatchedSeeds
from ganlab.config import TrialConfig
from ganlab.devices import (
    device_name,
    full_precision,
    generator_state,
    numerics,
    resolve_device,
    restore_generator,
    seeded_generator,
    state_device_type,
    synchronize,
)
from ganlab.losses import LOSSES
from ganlab.metrics import Evaluator
from ganlab.metrics.assets import EvalAssets
from ganlab.metrics.evaluate import rung_protocol
from ganlab.objective import mode_outcome, robust_objective
from ganlab.penalties import PENALTIES
from ganlab.reports import SIGNALS, EvalReport, SeedReport

Report = Callable[[EvalReport], None]

G_SIGNALS = tuple(name for name in SIGNALS if name.endswith("_g"))
STEP_SIGNALS = tuple(name for name in SIGNALS if name not in G_SIGNALS) + G_SIGNALS
"""The layout of a seed's signal sums: D's signals, then G's, in the order their steps check them
(loss, logits on real, logits on fake, gradient norm; loss, gradient norm)."""
EVAL_SEED_OFFSET = 1_000_003  # evaluation draws from its own generator, apart from training's
EVAL_CHUNK = 1000  # fakes generated at once in an evaluation
# Config fields a checkpoint may differ in: where it runs and reads its data, and how its seeds
# are executed (the checkpoint's layout is per seed either way).
PLACEMENT = ("device", "data_dir", "download", "execution", "cuda_graphs")
STREAMS = ("rng", "eval_rng")  # a seed's random streams, by their names in its state


@dataclass
class Seed:
    """Everything one seed owns: networks, optimisers, its random streams and its fate.

    `dead` (0. or 1., float32 as the optimisers' `found_inf` wants it), `signals` (the sums of
    the training signals) and `dead_steps` (how many steps ended with the seed dead) live on the
    trial's device and change inside training steps. The host reads them at evaluations: a seed
    found dead at step T died at `T - dead_steps + 1`, its `diverged_step`; a live one's signal
    means are the sums over the `T - read_at` steps since the last read.
    """

    seed: int
    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    g_ema: nn.Module | None
    rng: torch.Generator
    eval_rng: torch.Generator
    dead: Tensor
    signals: Tensor
    dead_steps: Tensor
    read_at: int = 0  # the step at which the host last read the device's sums and flag
    diverged_step: int | None = None
    g_params: list[Tensor] = field(init=False, repr=False)
    d_params: list[Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.g_params, self.d_params = list(self.g.parameters()), list(self.d.parameters())
        # The fused Adam kernels skip their whole update where found_inf is 1.
        self.opt_g.found_inf = self.opt_d.found_inf = self.dead

    @property
    def alive(self) -> bool:
        """Alive as far as the host knows: the device may have flagged it since."""
        return self.diverged_step is None


class Trial:
    """Train `config` over its seeds; `run()` reports after every evaluation."""

    def __init__(
        self,
        config: TrialConfig,
        report: Report | None = None,
        assets: EvalAssets | Sequence[EvalAssets] | None = None,
    ):
        """`assets`: the protocol's real side, as a sweep's driver made it for every trial
        (`ganlab.protocols`): one per sample count the trial evaluates with (`n_eval`, and
        `n_eval_rung` where it differs); None makes them here (`ganlab trial`)."""
        self.config = config
        self.report = report or (lambda result: None)
        self.device = resolve_device(config.device)
        data = datasets.load(config.dataset, config.data_dir, config.download)
        final = data.n_eval if config.n_eval is None else config.n_eval
        # The last evaluation's, and the earlier ones' (the same where the counts are).
        self.evaluator = Evaluator(data, final, str(self.device), _assets(assets, final, final))
        self.rung_evaluator = self.evaluator
        if config.n_eval_rung is not None and config.n_eval_rung != final:
            rung = config.n_eval_rung
            self.rung_evaluator = Evaluator(data, rung, str(self.device),
                                            _assets(assets, rung, final))  # fmt: skip
            # Its rows and the last evaluation's are one measurement, each with its own count.
            protocol = rung_protocol(self.rung_evaluator.protocol, self.evaluator.protocol)
            self.rung_evaluator.protocol = protocol
        self.data = data.to(self.device)  # resident for the whole trial: no copies per step
        self.loss = LOSSES[config.loss]
        # Weighted already; the do-nothing penalty, or a weight of 0, runs no kernel at all.
        self.penalty = penalties.combine(config.penalty, config.penalty_weight, PENALTIES)
        self.seeds = [self._build_seed(seed) for seed in config.seeds]
        self.execution = execution.choose(config, self.device)
        self._batched: BatchedSeeds | None = None  # the stacked live seeds, when batched
        # What the checked signals may reach: losses and logits finite, gradient norms bounded.
        # D's step checks (loss_d, d_real, d_fake, grad_norm_d), G's (loss_g, grad_norm_g).
        finite, grad = torch.finfo(torch.float32).max, config.max_grad_norm
        limits = {"dtype": torch.float64, "device": self.device}
        self._d_limits = torch.tensor([finite, finite, finite, grad], **limits)
        self._g_limits = torch.tensor([finite, grad], **limits)
        self.step = 0
        self.wall_s = 0.0
        self.train_s = 0.0
        self.history: list[EvalReport] = []
        self.samples: dict[int, Tensor] = {}
        # Each load that reseeded random streams: {"step": int, "from": type, "to": type}.
        self.reseeds: list[dict[str, Any]] = []
        # The clones behind these weights (Population Based Training's exploits, recorded by
        # `ganlab.sweep`): {"step", "trial", "from_trial", "changed": {field: [old, new]}}.
        self.exploits: list[dict[str, Any]] = []

    # --- construction ---------------------------------------------------------------------

    def _build_seed(self, seed: int) -> Seed:
        cfg, device = self.config, self.device
        # Weights are initialised on the CPU from the seed, then moved: a seed starts from the
        # same weights on every device. Training draws only from the seed's generators.
        torch.manual_seed(seed)
        g, d = models.build(cfg.arch_config, self.data.shape)
        g, d = g.to(device), d.to(device)
        betas = (cfg.beta1, cfg.beta2)
        return Seed(
            seed=seed,
            g=g,
            d=d,
            # fused: one kernel per parameter, where the default runs a dozen ops on each; on
            # small models that was the largest cost of a step. It also takes `found_inf`.
            opt_g=torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=betas, fused=True),
            opt_d=torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas, fused=True),
            g_ema=copy.deepcopy(g).requires_grad_(False) if cfg.ema > 0 else None,
            rng=seeded_generator(seed, device),
            eval_rng=seeded_generator(seed + EVAL_SEED_OFFSET, device),
            dead=torch.zeros((), device=device),
            signals=torch.zeros(len(STEP_SIGNALS), dtype=torch.float64, device=device),
            dead_steps=torch.zeros((), dtype=torch.float64, device=device),
        )

    # --- training ---------------------------------------------------------------------------

    def run(self, until: int | None = None) -> list[EvalReport]:
        """Train to `until` (default: the configured steps), evaluating on the way."""
        until = self.config.steps if until is None else min(until, self.config.steps)
        if self.step == 0 and not self.history:
            self.evaluate()  # the initialisation is a point on every curve
        while self.step < until and any(s.alive for s in self.seeds):
            stop = min(until, (self.step // self.config.eval_every + 1) * self.config.eval_every)
            self.train(stop - self.step)
            self.evaluate()
        return self.history

    def train(self, n_steps: int) -> None:
        """`n_steps` steps of every live seed: all at once as one stacked model (`batched`), or
        seed after seed at each step (`sequential`), as `self.execution` says."""
        start = time.perf_counter()
        live = [s for s in self.seeds if s.alive]
        with self._numerics():
            if self.execution == "batched" and live and n_steps > 0:
                engine = self._stacked(live)
                engine.run(n_steps)
                engine.store()
                self.step += n_steps
            else:
                for _ in range(n_steps):
                    self.step += 1
                    for seed in live:
                        self._train_step(seed)
            synchronize(self.device)  # the steps are done, not only queued
        elapsed = time.perf_counter() - start
        self.train_s += elapsed
        self.wall_s += elapsed

    def _stacked(self, live: list[Seed]) -> BatchedSeeds:
        """The batched engine of the `live` seeds, loaded with their current state. Kept while
        the same seeds live (a captured CUDA graph stays valid); rebuilt when one has died."""
        if self._batched is None or [s.seed for s in self._batched.seeds] != [
            s.seed for s in live
        ]:
            self._batched = BatchedSeeds(self.config, self.data, live)
        self._batched.load()
        return self._batched

    def _train_step(self, s: Seed) -> None:
        """One step of one seed, host-free: every value stays on the device."""
        cfg, batch = self.config, self.config.batch_size
        for i in range(cfg.d_steps):
            real = self.data.sample(batch, s.rng)
            last = i == cfg.d_steps - 1
            with torch.set_grad_enabled(last):  # the last fakes serve G's step too
                fake = s.g(self._noise(batch, s.rng))
            d_real, d_fake = s.d(real), s.d(fake.detach())
            d_loss, _ = self.loss(d_real, d_fake)
            if self.penalty is not None:
                d_loss = d_loss + self.penalty(s.d, real, fake.detach(), s.rng)
            s.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            with torch.no_grad():
                d_signals = torch.stack(
                    [d_loss, d_real.mean(), d_fake.mean(), _grad_norm(s.d_params)]
                )
            _check(s, d_signals, self._d_limits)
            s.opt_d.step()
            if cfg.clip:
                _clip(s.d_params, cfg.clip)
        d_fake_g = s.d(fake)
        _, g_loss = self.loss(d_real.detach(), d_fake_g)
        s.opt_g.zero_grad(set_to_none=True)
        # Only G's gradients: D's weight gradients would cost time and overwrite its own step's.
        g_loss.backward(inputs=s.g_params)
        with torch.no_grad():
            g_signals = torch.stack([g_loss, _grad_norm(s.g_params)])
        _check(s, g_signals, self._g_limits)
        s.opt_g.step()
        if s.g_ema is not None:
            _ema_update(s.g_ema, s.g, cfg.ema, s.dead)
        # A dead seed's sums turn to garbage, but a seed found dead reports no signals.
        s.signals += torch.cat([d_signals, g_signals])
        s.dead_steps += s.dead

    def _noise(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(n, self.config.z_dim, generator=rng, device=self.device)

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self) -> EvalReport:
        """Measure every live seed now, report, and return the report."""
        start = time.perf_counter()
        # IEEE float32 whatever the training precision: the protocol's numbers on every card.
        final = self.step >= self.config.steps
        evaluator = self.evaluator if final else self.rung_evaluator
        # FID∞ costs 4 more Fréchet distances a seed: the last evaluation's, or the objective's.
        fid_inf = final or self.config.metric == "fid_inf"
        with self._numerics(), full_precision():
            per_seed = (self._initial_reports(evaluator, fid_inf)
                        or self._evaluate_seeds(evaluator, fid_inf))  # fmt: skip
        self.wall_s += time.perf_counter() - start
        report = EvalReport(
            step=self.step,
            objective=robust_objective(per_seed.values(), self.config.metric, self.config.mode),
            div_rate=sum(not s.alive for s in self.seeds) / len(self.seeds),
            collapse_rate=sum(bool(r.collapsed) for r in per_seed.values()) / len(self.seeds),
            wall_s=self.wall_s,
            samples_per_s=self._samples_per_s(),
            device=str(self.device),
            protocol=evaluator.protocol.to_json(),
            last=final or not any(s.alive for s in self.seeds),
            seeds=per_seed,
            device_name=device_name(self.device),
            execution=self.execution,
            reseeds=[dict(event) for event in self.reseeds],
            exploits=[dict(event) for event in self.exploits],
        )
        self.history.append(report)
        self.report(report)
        return report

    def _evaluate_seeds(self, evaluator: Evaluator, fid_inf: bool = True) -> dict[int, SeedReport]:
        """Every seed's report: the live ones measured together by `evaluator` (one generator
        pass, one extractor pass, one read of their fates and one of their metrics), the
        diverged ones by their step; FID∞ left out without `fid_inf`."""
        live = [s for s in self.seeds if s.alive]
        signals = self._read_seeds(live)
        live = [s for s in live if s.alive]
        fakes = self._generate_seeds(live, evaluator.n_fake)
        reports = {s.seed: SeedReport(diverged_step=s.diverged_step) for s in self.seeds}
        for s, fake, metrics in zip(live, fakes, evaluator.evaluate_seeds(fakes, fid_inf),
                                    strict=True):  # fmt: skip
            if metrics is None:  # samples not all finite
                s.diverged_step = self.step
                reports[s.seed] = SeedReport(diverged_step=s.diverged_step)
                continue
            # A copy, not a view: a view would keep (and a checkpoint save) every sample.
            self.samples[s.seed] = fake[: self.config.sample_keep].to("cpu", copy=True)
            outcome = mode_outcome(metrics, self.data.n_modes)  # {} where the data has no modes
            collapsed = outcome.pop("collapsed", None)
            reports[s.seed] = SeedReport(metrics={**metrics, **outcome}, signals=signals[s.seed],
                                         collapsed=collapsed)  # fmt: skip
        return reports

    def _read_seeds(self, live: list[Seed]) -> dict[int, dict[str, float]]:
        """The host's look at the live seeds: their fates and their mean training signals since
        the last evaluation, in one read; the sums start again from zero."""
        if not live:
            return {}
        fates = [torch.cat([s.signals, torch.stack([s.dead_steps, _finite_params(s).double()])])
                 for s in live]  # fmt: skip
        rows = torch.stack(fates).tolist()
        return {s.seed: self._take_fate(s, row) for s, row in zip(live, rows, strict=True)}

    def _take_fate(self, s: Seed, row: list[float]) -> dict[str, float]:
        *sums, dead_steps, finite = row
        steps = self.step - s.read_at
        s.signals.zero_()
        s.dead_steps.zero_()
        s.read_at = self.step
        if dead_steps:
            s.diverged_step = self.step - int(dead_steps) + 1
        elif not finite:
            s.diverged_step = self.step
        if not steps:
            return {}
        return {name: total / steps for name, total in zip(STEP_SIGNALS, sums, strict=True)}

    def _generate_seeds(self, live: list[Seed], n: int | None = None) -> list[Tensor]:
        """`n` evaluation fakes (default: the last evaluation's count) of every live seed: one
        stacked generator pass where the seeds train batched, seed after seed where they
        train sequentially."""
        n = self.evaluator.n_fake if n is None else n
        if not live:
            return []
        if self.execution == "batched":
            return list(self._stacked(live).generate(n, EVAL_CHUNK))
        return [self._generate(s, n) for s in live]

    def _initial_reports(
        self, evaluator: Evaluator, fid_inf: bool
    ) -> dict[int, SeedReport] | None:
        """The step-0 evaluation of a trial whose generators are those of one evaluated before
        in this process (`ganlab.initial`: same seeds, architecture, protocol, device and
        execution): its reports, samples and evaluation streams, taken instead of measured
        again. None where there is none, or where this trial is not at its start."""
        if self.step or self.history or not all(s.alive for s in self.seeds):
            return None
        protocol = evaluator.protocol.to_json()
        found = initial.key(self.config, self.device, self.execution, protocol, fid_inf)
        self._read_seeds(self.seeds)  # its weights may have been changed since they were made
        if not all(s.alive for s in self.seeds):
            return None
        taken = initial.take(found, self.seeds)
        if taken is not None:
            reports, samples = taken
            self.samples.update(samples)
            return reports
        reports = self._evaluate_seeds(evaluator, fid_inf)
        if all(s.alive for s in self.seeds):
            initial.keep(found, reports, self.samples, self.seeds)
        return reports

    @torch.no_grad()
    def _generate(self, s: Seed, n: int | None = None) -> Tensor:
        """`n` evaluation fakes (default: the last evaluation's count), drawn with BatchNorm in
        inference mode (running statistics), so that no sample depends on the others in its
        chunk."""
        g = s.g_ema if s.g_ema is not None else s.g
        n = self.evaluator.n_fake if n is None else n
        g.eval()
        try:
            chunks = range(0, n, EVAL_CHUNK)
            parts = [g(self._noise(min(EVAL_CHUNK, n - i), s.eval_rng)) for i in chunks]
        finally:
            g.train()
        return torch.cat(parts)

    def _numerics(self) -> AbstractContextManager[None]:
        return numerics(self.config.fp32_precision, self.config.deterministic)

    def _samples_per_s(self) -> float:
        seed_steps = self.step * len(self.seeds)
        return seed_steps * self.config.batch_size / self.train_s if self.train_s else 0.0

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole state: networks, optimisers, EMA, random streams, step, history."""
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "wall_s": self.wall_s,
            "train_s": self.train_s,
            "history": [report.to_dict() for report in self.history],  # plain: weights_only
            "samples": dict(self.samples),
            "seeds": [_seed_state(s) for s in self.seeds],
            "reseeds": [dict(event) for event in self.reseeds],
            "exploits": [dict(event) for event in self.exploits],
        }

    def load_state_dict(
        self, state: dict[str, Any], mutable: Sequence[str] = ()
    ) -> dict[str, list[Any]]:
        """Restore `state_dict()`'s output, from whatever device its tensors are on. Random
        streams written by another device type are reseeded, and the move recorded in
        `reseeds`. The fields in `mutable` may differ from the checkpoint's (Population Based
        Training's exploits): this trial's values take effect from here on. Returns those that
        differ, {field: [checkpoint's, this trial's]}."""
        saved, mine = _identity(state["config"]), _identity(self.config.to_dict())
        if {k: v for k, v in saved.items() if k not in mutable} != {
            k: v for k, v in mine.items() if k not in mutable
        }:
            raise ValueError("checkpoint was written by a different configuration")
        self.step, self.wall_s, self.train_s = state["step"], state["wall_s"], state["train_s"]
        self.history = [EvalReport.from_dict(report) for report in state["history"]]
        self.samples = dict(state["samples"])
        self.reseeds = [dict(event) for event in state.get("reseeds", [])]  # older: none
        self.exploits = [dict(event) for event in state.get("exploits", [])]
        moved: set[str] = set()
        for s, saved_seed in zip(self.seeds, state["seeds"], strict=True):
            moved |= _load_seed_state(s, saved_seed, self.step)
            _set_hyperparameters(s, self.config)  # the optimisers' states bring the saved ones
        self._batched = None  # a stacked engine takes its rates from this trial's config
        to = self.seeds[0].rng.device.type
        self.reseeds += [{"step": self.step, "from": kind, "to": to} for kind in sorted(moved)]
        return {k: [saved[k], mine[k]] for k in mutable if saved.get(k) != mine.get(k)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the whole state to `path` (a checkpoint `load` restores on any device)."""
        torch.save(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by `save`, on a card or not (`read_state`), copied onto
        this trial's device."""
        self.load_state_dict(read_state(path))


def _assets(
    assets: EvalAssets | Sequence[EvalAssets] | None, n_fake: int, final: int
) -> EvalAssets | None:
    """The assets of `n_fake` fakes among those handed over; None (made here) without any."""
    if assets is None:
        return None
    given = [assets] if isinstance(assets, EvalAssets) else list(assets)
    for candidate in given:
        if candidate.n_fake == n_fake:
            return candidate
    if n_fake == final:
        return given[0]  # the last evaluation's count: `Evaluator` says what is wrong with it
    counts = sorted(a.n_fake for a in given)
    raise ValueError(f"this trial evaluates with {n_fake} fakes, but was handed the evaluation "
                     f"protocol of {counts} only: a sweep's driver must make one for n_eval and "
                     "one for n_eval_rung")  # fmt: skip


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by `Trial.save`, as `state_dict()` gave it, read onto the CPU (so a
    card's checkpoint opens where there is none). `weights_only`: tensors, dicts, lists, numbers
    and strings, nothing that runs code when read."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two configurations the same trial: all but where it runs and reads its data
    (a checkpoint written on a card resumes on a CPU, with the data elsewhere). A field added
    since a checkpoint was written (`fp32_precision`, `deterministic`) counts as its default."""
    config = {**TrialConfig().to_dict(), **config}
    return {k: v for k, v in config.items() if k not in PLACEMENT}


def _check(s: Seed, signals: Tensor, limits: Tensor) -> None:
    """Flag `s` dead, on the device, if `signals` break their `limits` (NaN breaks any)."""
    s.dead.masked_fill_((signals.abs() <= limits).all().logical_not(), 1.0)


def _grad_norm(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float, dead: Tensor) -> None:
    # ema += w * (p - ema), as lerp computes it, in three foreach ops over all the weights: a
    # foreach lerp with a tensor weight runs one kernel per parameter on a card. A dead seed's
    # weight is 0, which leaves its (finite) average exactly as it was.
    weight = (1 - decay) * (1 - dead)
    ema_params = list(ema.parameters())
    steps = torch._foreach_sub(list(model.parameters()), ema_params)
    torch._foreach_mul_(steps, weight)
    torch._foreach_add_(ema_params, steps)
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(model.buffers()))


@torch.no_grad()
def _clip(params: list[Tensor], clip: float) -> None:
    """WGAN weight clipping of every parameter, two foreach ops in all."""
    torch._foreach_clamp_min_(params, -clip)
    torch._foreach_clamp_max_(params, clip)


def _finite_params(s: Seed) -> Tensor:
    """Whether every weight of G and D is finite, as a 0-d bool tensor on the device."""
    params = [*s.g_params, *s.d_params]
    return torch.stack([torch.isfinite(p).all() for p in params]).all()


def _seed_state(s: Seed) -> dict[str, Any]:
    return {
        "seed": s.seed,
        "g": s.g.state_dict(),
        "d": s.d.state_dict(),
        "opt_g": s.opt_g.state_dict(),
        "opt_d": s.opt_d.state_dict(),
        "g_ema": s.g_ema.state_dict() if s.g_ema is not None else None,
        "rng": generator_state(s.rng),
        "eval_rng": generator_state(s.eval_rng),
        # Which device type's generator wrote each state: only that type can take it back.
        "rng_device": s.rng.device.type,
        "eval_rng_device": s.eval_rng.device.type,
        "read_at": s.read_at,
        "diverged_step": s.diverged_step,
        "dead": s.dead.clone(),
        "signals": s.signals.clone(),
        "dead_steps": s.dead_steps.clone(),
    }


def _load_seed_state(s: Seed, saved: dict[str, Any], step: int) -> set[str]:
    """Restore one seed at `step`; returns the device types of the streams it had to reseed."""
    if saved["seed"] != s.seed:
        raise ValueError(f"checkpoint seed {saved['seed']} where {s.seed} was expected")
    s.g.load_state_dict(saved["g"])
    s.d.load_state_dict(saved["d"])
    s.opt_g.load_state_dict(saved["opt_g"])
    s.opt_d.load_state_dict(saved["opt_d"])
    if s.g_ema is not None:
        s.g_ema.load_state_dict(saved["g_ema"])
    s.read_at, s.diverged_step = saved["read_at"], saved["diverged_step"]
    # Copied into the seed's own tensors: the optimisers hold `dead` as their found_inf.
    for name in ("dead", "signals", "dead_steps"):
        getattr(s, name).copy_(saved[name])
    return {kind for stream in STREAMS if (kind := _restore_stream(s, saved, stream, step))}


def _set_hyperparameters(s: Seed, config: TrialConfig) -> None:
    """The learning rates and betas of `config` in the seed's optimisers (a loaded optimiser
    state brings the rates it was saved with)."""
    for optimizer, lr in ((s.opt_g, config.lr_g), (s.opt_d, config.lr_d)):
        for group in optimizer.param_groups:
            group["lr"], group["betas"] = lr, (config.beta1, config.beta2)


def written_on(saved: dict[str, Any], stream: str) -> str:
    """The device type whose generator wrote `stream` (`rng`, `eval_rng`) of a seed's saved
    state: as recorded, or, in a checkpoint written before it was, told by the state's length."""
    return saved.get(f"{stream}_device") or state_device_type(saved[stream])


def _restore_stream(s: Seed, saved: dict[str, Any], stream: str, step: int) -> str | None:
    """Restore `stream` of `s`; the device type that wrote it if it had to be reseeded."""
    kind = written_on(saved, stream)
    reseeded = restore_generator(getattr(s, stream), saved[stream], kind, s.seed, step, stream)
    return kind if reseeded else None
