"""A trial's live seeds trained as one stacked model: the batched execution of `Trial.train`.

`BatchedSeeds(config, data, seeds)` stacks the seeds' G and D (`ganlab.stacked`), their Adam
states (`ganlab.adam`), EMAs, fates and signal sums, and `run(n)` trains all of them n steps with
a constant number of ops per step whatever K: on a card, a constant number of kernel launches.
Per seed it is the sequential step exactly, up to float rounding of the batched kernels:

- random streams: every draw is made by the seed's own generator, one draw per seed and
  quantity in the sequential order (real batch, noise, the penalty's draws), then stacked, so a
  seed draws the numbers it draws alone;
- losses are `LOSSES[name]` vmapped over seeds (one per seed, each the mean over its batch);
  the summed loss's gradient is each seed's gradient, since no seed's value meets another's;
- penalties (`BATCHED_PENALTIES`, the names of `ganlab.penalties.PENALTIES`) take input
  gradients per seed and means per seed; `none`, or a weight of 0, runs nothing;
- fate: the step's signals are checked per seed on the device; a failing seed is flagged dead
  and `BatchedAdam` skips its whole update from that step on, as does its EMA.

The seeds' own objects (`ganlab.trial.Seed`: modules, torch optimisers, generators, flags)
stay the trial's record, read by evaluation and checkpoints: `load()` copies them in before a
run, `store()` back after. A seed the host has found dead is not stacked again (the trial
builds a new `BatchedSeeds` of the live ones), so it costs nothing and, as in the sequential
execution, its BatchNorm statistics and power iterations stop moving.

CUDA graphs (`cuda_graphs`): the step has fixed shapes, reads nothing back, keeps its optimiser
state in tensors and draws only from generators registered with the graph, so `run` can
capture one step after a few eager ones and replay it.
"""

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ganlab import penalties, stacked
from ganlab.adam import BatchedAdam
from ganlab.config import TrialConfig
from ganlab.data import Data, to_float
from ganlab.losses import LOSSES
from ganlab.penalties import PENALTIES
from ganlab.registry import register

if TYPE_CHECKING:
    from ganlab.trial import Seed

WARMUP_STEPS = 3  # eager steps before a capture: autograd and cuDNN set themselves up

# --- draws ----------------------------------------------------------------------------------


def sample_real(data: Data, layout: stacked.Layout, n: int, rngs: Sequence[torch.Generator]):
    """`n` training samples per seed in `layout`, each seed's drawn with its own generator as
    `Data.sample` draws them."""
    if data.centres is not None:
        device, centres = data.centres.device, data.centres
        idx, noise = [], []
        for rng in rngs:  # the order of `Data.sample`: indices, then noise, per generator
            idx.append(torch.randint(0, len(centres), (n,), generator=rng, device=device))
            noise.append(torch.randn(n, centres.shape[1], generator=rng, device=device))
        return centres[torch.stack(idx)] + data.sigma * torch.stack(noise)
    images = data.train
    idx = [torch.randint(0, len(images), (n, data.stacked), generator=rng, device=images.device)
           for rng in rngs]  # fmt: skip
    x = to_float(images[layout.stack(idx).flatten()])  # (K*n*stacked, C, H, W), seeds in order
    if layout.channels:
        return x.view(n, -1, *x.shape[2:])  # (n, K*stacked*C, H, W)
    return x.view(len(rngs), n, -1, *x.shape[2:])


def noise(layout: stacked.Layout, n: int, z_dim: int, rngs: Sequence[torch.Generator],
          device: torch.device) -> Tensor:  # fmt: skip
    """G's input for `n` samples of every seed, each seed's from its generator."""
    return layout.join([torch.randn(n, z_dim, generator=rng, device=device) for rng in rngs])


# --- penalties ------------------------------------------------------------------------------

BatchedPenalty = Callable[[stacked.StackedNet, Tensor, Tensor, Sequence[torch.Generator]], Tensor]
BATCHED_PENALTIES: dict[str, BatchedPenalty] = {}
"""name -> fn(stacked D, real, fake, the seeds' generators) -> (K,) penalties: each seed's
`PENALTIES[name]`, with the same draws."""


def _input_grad_norm(d: stacked.StackedNet, x: Tensor) -> Tensor:
    """(K, B): per seed and sample the norm of dD/dx, in the graph. The summed output's input
    gradient is every seed's own: no seed's output depends on another's input."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    per_seed = d.layout.per_seed(grad)
    return torch.linalg.vector_norm(per_seed, dim=tuple(range(2, per_seed.ndim)))


def _per_seed_draw(layout: stacked.Layout, x: Tensor, shape: Callable[[Tensor], tuple],
                   rngs: Sequence[torch.Generator]) -> Tensor:  # fmt: skip
    """A `torch.rand` per seed of `shape(seed's batch)`, stacked along the seed dimension."""
    per_seed = layout.per_seed(x)
    draws = [torch.rand(shape(per_seed[0]), generator=rng, device=x.device) for rng in rngs]
    return layout.stack(draws)


def _batch_shape(x: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.ndim - 1)


@register(BATCHED_PENALTIES, "none")
def _no_penalty(d, real, fake, rngs) -> Tensor:
    return real.new_zeros(len(rngs))


@register(BATCHED_PENALTIES, "gp")
def _gradient_penalty(d, real, fake, rngs) -> Tensor:
    layout = d.layout
    eps = _per_seed_draw(layout, real, _batch_shape, rngs)
    x = layout.merge(eps * layout.seeds(real) + (1 - eps) * layout.seeds(fake.detach()))
    return (_input_grad_norm(d, x) - 1).pow(2).mean(1)


@register(BATCHED_PENALTIES, "r1")
def _r1_penalty(d, real, fake, rngs) -> Tensor:
    return 0.5 * _input_grad_norm(d, real).pow(2).mean(1)


@register(BATCHED_PENALTIES, "r2")
def _r2_penalty(d, real, fake, rngs) -> Tensor:
    return 0.5 * _input_grad_norm(d, fake).pow(2).mean(1)


@register(BATCHED_PENALTIES, "dragan")
def _dragan_penalty(d, real, fake, rngs) -> Tensor:
    layout = d.layout
    noise_ = _per_seed_draw(layout, real, lambda x: tuple(x.shape), rngs)
    per_seed = layout.per_seed(real)
    std = per_seed.std(dim=tuple(range(1, per_seed.ndim)))  # each seed's whole batch
    scale = std.view([-1 if i == layout.seed_dim else 1 for i in range(noise_.ndim)])
    return (_input_grad_norm(d, layout.merge(layout.seeds(real) + 0.5 * scale * noise_)) - 1
            ).pow(2).mean(1)  # fmt: skip


# One list of names, the penalties': every built-in has its batched form (a plugin's may not,
# and its trials train sequentially, `execution.choose`).
_BUILT_IN = {name for name, fn in PENALTIES.items() if fn.__module__ == "ganlab.penalties"}
if not _BUILT_IN <= set(BATCHED_PENALTIES) <= set(PENALTIES):
    raise ImportError(f"batched penalties {sorted(BATCHED_PENALTIES)} != {sorted(PENALTIES)}")


def batchable(config: TrialConfig) -> bool:
    """Whether every penalty of `config` has a batched form."""
    terms = penalties.parse(config.penalty, PENALTIES)
    return all(name in BATCHED_PENALTIES for _, name in terms)


# --- the engine -------------------------------------------------------------------------------


class BatchedSeeds:
    """The live `seeds` of a trial of `config` on `data`, stacked; see the module's docstring."""

    def __init__(self, config: TrialConfig, data: Data, seeds: "Sequence[Seed]"):
        self.config, self.data, self.seeds = config, data, list(seeds)
        first = self.seeds[0]
        self.device = first.dead.device
        self.g = stacked.stack([s.g for s in self.seeds])
        self.d = stacked.stack([s.d for s in self.seeds])
        if self.g.layout.channels != self.d.layout.channels:
            raise TypeError("G and D of one architecture must share a layout")
        self.layout = self.g.layout
        betas = (config.beta1, config.beta2)
        self.opt_g = BatchedAdam(self.g.flat, config.lr_g, betas)
        self.opt_d = BatchedAdam(self.d.flat, config.lr_d, betas)
        self.ema = self.g.flat.detach().clone() if first.g_ema is not None else None
        k = len(self.seeds)
        self.dead = torch.zeros(k, device=self.device)
        self.signals = torch.zeros(k, first.signals.shape[0], dtype=torch.float64,
                                   device=self.device)  # fmt: skip
        self.dead_steps = torch.zeros(k, dtype=torch.float64, device=self.device)
        self.losses = torch.func.vmap(LOSSES[config.loss])
        self.penalty = penalties.combine(config.penalty, config.penalty_weight, BATCHED_PENALTIES)
        finite, grad = torch.finfo(torch.float32).max, config.max_grad_norm
        limits = {"dtype": torch.float64, "device": self.device}
        self._d_limits = torch.tensor([finite, finite, finite, grad], **limits)
        self._g_limits = torch.tensor([finite, grad], **limits)
        self.rngs = [s.rng for s in self.seeds]
        self.graph: torch.cuda.CUDAGraph | None = None
        self._eager_steps = 0

    # --- the seeds' record ----------------------------------------------------------------

    @torch.no_grad()
    def load(self) -> None:
        """Copy the seeds' weights, buffers, Adam states, EMAs, flags and sums in."""
        seeds = self.seeds
        for net, nets, opt, opts in self._parts():
            net.flat.copy_(net.gather(nets))
            net.load_buffers(nets)
            opt.gather(opts, [self._params(net, n) for n in nets])
        if self.ema is not None:
            self.ema.copy_(self.g.gather([s.g_ema for s in seeds]))
        for name in ("dead", "signals", "dead_steps"):
            getattr(self, name).copy_(torch.stack([getattr(s, name) for s in seeds]))

    @torch.no_grad()
    def store(self) -> None:
        """Copy everything back into the seeds' own objects (the layout of checkpoints)."""
        seeds = self.seeds
        for net, nets, opt, opts in self._parts():
            net.scatter(net.flat, nets)
            net.store_buffers(nets)
            opt.scatter(opts, [self._params(net, n) for n in nets])
        if self.ema is not None:
            emas = [s.g_ema for s in seeds]
            self.g.scatter(self.ema, emas)
            self.g.store_buffers(emas)  # the EMA's buffers are G's, as each sequential step copies
        for name in ("dead", "signals", "dead_steps"):
            for s, value in zip(seeds, getattr(self, name), strict=True):
                getattr(s, name).copy_(value)

    def _parts(self):
        seeds = self.seeds
        yield self.g, [s.g for s in seeds], self.opt_g, [s.opt_g for s in seeds]
        yield self.d, [s.d for s in seeds], self.opt_d, [s.opt_d for s in seeds]

    @staticmethod
    def _params(net: stacked.StackedNet, module: torch.nn.Module) -> list[Tensor]:
        return [operator.attrgetter(path)(module) for path in net.slots]

    # --- training ---------------------------------------------------------------------------

    def run(self, n_steps: int) -> None:
        """`n_steps` steps of every stacked seed (replays of a captured step with CUDA graphs,
        after `WARMUP_STEPS` eager ones)."""
        if not (self.config.cuda_graphs and self.device.type == "cuda"):
            for _ in range(n_steps):
                self.step()
            return
        done = 0
        while done < n_steps and self.graph is None and self._eager_steps < WARMUP_STEPS:
            self._side_stream_step()
            done += 1
        if done < n_steps and self.graph is None:
            self.graph = self._capture()
        for _ in range(n_steps - done):
            self.graph.replay()

    def _side_stream_step(self) -> None:
        # Eager warm-up steps run on a side stream, as torch's capture recipe asks.
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self.step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self._eager_steps += 1

    def _capture(self) -> "torch.cuda.CUDAGraph":
        """One step captured (recorded, not run: each replay is a step). The seeds' training
        generators are registered, so each replay draws the next numbers of every stream."""
        graph = torch.cuda.CUDAGraph()
        for rng in self.rngs:
            graph.register_generator_state(rng)
        with torch.cuda.graph(graph):
            self.step()
        return graph

    def step(self) -> None:
        """One step of every stacked seed, host-free: every value stays on the device."""
        cfg, batch = self.config, self.config.batch_size
        for i in range(cfg.d_steps):
            real = sample_real(self.data, self.layout, batch, self.rngs)
            last = i == cfg.d_steps - 1
            with torch.set_grad_enabled(last):  # the last fakes serve G's step too
                fake = self.g(noise(self.layout, batch, cfg.z_dim, self.rngs, self.device))
            d_signals, d_real = self._d_step(real, fake)
        _, g_loss = self.losses(d_real, self.d(fake))
        self.g.flat.grad = None
        # Only G's gradients: D's would cost time and overwrite its own step's.
        g_loss.sum().backward(inputs=[self.g.flat])
        with torch.no_grad():
            g_signals = torch.stack([g_loss, _row_norms(self.g.flat.grad)], 1)
        self._check(g_signals, self._g_limits)
        self.opt_g.step(self.dead == 0)
        if self.ema is not None:
            self._ema_update()
        with torch.no_grad():
            self.signals += torch.cat([d_signals, g_signals], 1)
            self.dead_steps += self.dead

    def _d_step(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """One D update of every seed: its signals (K, 4) and D's logits on real (detached,
        for G's loss)."""
        cfg = self.config
        d_real, d_fake = self.d(real), self.d(fake.detach())
        d_loss, _ = self.losses(d_real, d_fake)
        if self.penalty is not None:
            d_loss = d_loss + self.penalty(self.d, real, fake, self.rngs)
        self.d.flat.grad = None
        d_loss.sum().backward()
        with torch.no_grad():
            grad_norm = _row_norms(self.d.flat.grad)
            signals = torch.stack([d_loss, d_real.mean(1), d_fake.mean(1), grad_norm], 1)
        self._check(signals, self._d_limits)
        self.opt_d.step(self.dead == 0)
        if cfg.clip:
            with torch.no_grad():
                self.d.flat.clamp_(-cfg.clip, cfg.clip)
        return signals, d_real.detach()

    def _check(self, signals: Tensor, limits: Tensor) -> None:
        """Flag dead, on the device, every seed whose `signals` (K, n) break `limits`."""
        self.dead.masked_fill_((signals.abs() <= limits).all(1).logical_not(), 1.0)

    @torch.no_grad()
    def _ema_update(self) -> None:
        # One lerp over every seed's weights, by 1 - decay where alive and 0 where dead, which
        # leaves a dead seed's (finite) average exactly as it was, as the sequential step does.
        weight = (1 - self.config.ema) * (self.dead == 0).unsqueeze(1)
        self.ema.lerp_(self.g.flat.detach(), weight)

    # --- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, n: int, chunk: int) -> Tensor:
        """(K, n, *shape): every seed's `n` evaluation samples, drawn from its `eval_rng` in
        chunks of `chunk` as the sequential evaluation draws them, by G in inference mode (its
        EMA where there is one)."""
        rngs = [s.eval_rng for s in self.seeds]
        flat = self.ema if self.ema is not None else self.g.flat
        z_dim, device = self.config.z_dim, self.device
        self.g.eval()
        try:
            chunks = range(0, n, chunk)
            parts = [self.g(noise(self.layout, min(chunk, n - i), z_dim, rngs, device), flat)
                     for i in chunks]  # fmt: skip
        finally:
            self.g.train()
        return self.layout.per_seed(torch.cat(parts, 0 if self.layout.channels else 1))


def _row_norms(grad: Tensor) -> Tensor:
    """(K,): the L2 norm of each seed's gradient (its row of the stacked gradient)."""
    return torch.linalg.vector_norm(grad, dim=1)
