"""One trial: one GAN configuration trained over K seeds in lockstep, measured honestly.

The trial knows nothing of Ray. It takes a typed configuration and a `report(result)` callback,
evaluates every `eval_every` steps, and exposes its whole state through `state_dict()` and
`load_state_dict()`, so a restored trial continues bit-identically on the CPU.

Stability is measured, never crashed on: a seed whose losses, gradients, weights or samples become
non-finite, or whose gradient norm explodes, is marked diverged at that step and stops while the
other seeds go on. The objective handed to schedulers and searchers is always finite.
"""

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ganlab import data as datasets
from ganlab import models
from ganlab.config import TrialConfig
from ganlab.losses import LOSSES
from ganlab.metrics import Evaluator
from ganlab.objective import is_collapsed, robust_objective
from ganlab.penalties import PENALTIES

Report = Callable[[dict[str, Any]], None]

SIGNALS = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")
EVAL_SEED_OFFSET = 1_000_003  # evaluation draws from its own generator, apart from training's


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device here")
    return torch.device(name)


@dataclass
class Seed:
    """Everything one seed owns: networks, optimisers, its random streams and its fate."""

    seed: int
    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    g_ema: nn.Module | None
    rng: torch.Generator
    eval_rng: torch.Generator
    diverged_step: int | None = None
    signals: Tensor = field(default_factory=lambda: torch.zeros(len(SIGNALS), dtype=torch.float64))
    signal_steps: int = 0
    g_params: list[Tensor] = field(init=False, repr=False)
    d_params: list[Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.g_params, self.d_params = list(self.g.parameters()), list(self.d.parameters())

    @property
    def alive(self) -> bool:
        return self.diverged_step is None


class Trial:
    """Train `config` over its seeds; `run()` reports after every evaluation."""

    def __init__(self, config: TrialConfig, report: Report | None = None):
        self.config = config
        self.report = report or (lambda result: None)
        self.device = resolve_device(config.device)
        self.data = datasets.load(config.dataset, config.data_dir, config.download)
        self.evaluator = Evaluator(self.data, config.n_eval, str(self.device))
        self.loss = LOSSES[config.loss]
        self.penalty = PENALTIES[config.penalty]
        self.seeds = [self._build_seed(seed) for seed in config.seeds]
        # What each training signal may reach: losses and logits finite, gradient norms bounded.
        finite = torch.finfo(torch.float32).max
        self._limits = torch.tensor(
            [finite] * 4 + [config.max_grad_norm] * 2, dtype=torch.float64, device=self.device
        )
        self.step = 0
        self.wall_s = 0.0
        self.train_s = 0.0
        self.history: list[dict[str, Any]] = []
        self.samples: dict[int, Tensor] = {}

    # --- construction ---------------------------------------------------------------------

    def _build_seed(self, seed: int) -> Seed:
        cfg = self.config
        torch.manual_seed(seed)  # weight initialisation; training draws only from `rng`
        g, d = models.build(cfg, self.data.shape)
        g, d = g.to(self.device), d.to(self.device)
        betas = (cfg.beta1, cfg.beta2)
        return Seed(
            seed=seed,
            g=g,
            d=d,
            # fused: one kernel per parameter, where the default runs a dozen ops on each; on
            # small models that was the largest cost of a step.
            opt_g=torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=betas, fused=True),
            opt_d=torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas, fused=True),
            g_ema=copy.deepcopy(g).requires_grad_(False) if cfg.ema > 0 else None,
            rng=torch.Generator(self.device).manual_seed(seed),
            eval_rng=torch.Generator(self.device).manual_seed(seed + EVAL_SEED_OFFSET),
        )

    # --- training ---------------------------------------------------------------------------

    def run(self, until: int | None = None) -> list[dict[str, Any]]:
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
        """`n_steps` steps of every live seed, seed after seed at each step."""
        start = time.perf_counter()
        for _ in range(n_steps):
            self.step += 1
            for seed in self.seeds:
                if seed.alive:
                    self._train_step(seed)
        elapsed = time.perf_counter() - start
        self.train_s += elapsed
        self.wall_s += elapsed

    def _train_step(self, s: Seed) -> None:
        cfg, batch = self.config, self.config.batch_size
        for i in range(cfg.d_steps):
            real = self.data.sample(batch, s.rng).to(self.device)
            last = i == cfg.d_steps - 1
            with torch.set_grad_enabled(last):  # the last fakes serve G's step too
                fake = s.g(self._noise(batch, s.rng))
            d_real, d_fake = s.d(real), s.d(fake.detach())
            d_loss, _ = self.loss(d_real, d_fake)
            if cfg.penalty_weight:
                d_loss = d_loss + cfg.penalty_weight * self.penalty(
                    s.d, real, fake.detach(), s.rng
                )
            s.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            s.opt_d.step()
            if cfg.clip:
                for p in s.d.parameters():
                    p.data.clamp_(-cfg.clip, cfg.clip)
        d_fake_g = s.d(fake)
        _, g_loss = self.loss(d_real.detach(), d_fake_g)
        s.opt_g.zero_grad(set_to_none=True)
        # Only G's gradients: D's weight gradients would cost time and overwrite its own step's.
        g_loss.backward(inputs=s.g_params)
        s.opt_g.step()
        if s.g_ema is not None:
            _ema_update(s.g_ema, s.g, cfg.ema)
        grad_d, grad_g = _grad_norm(s.d_params), _grad_norm(s.g_params)
        signals = torch.stack([d_loss, g_loss, d_real.mean(), d_fake.mean(), grad_d, grad_g])
        signals = signals.detach()
        # One comparison per step: NaN fails it, and so does ±inf against a finite limit.
        if not bool((signals.abs() <= self._limits).all()):
            s.diverged_step = self.step
            return
        s.signals += signals.cpu()
        s.signal_steps += 1

    def _noise(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(n, self.config.z_dim, generator=rng, device=self.device)

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Measure every live seed now, report, and return the report."""
        start = time.perf_counter()
        per_seed = {str(s.seed): self._evaluate_seed(s) for s in self.seeds}
        self.wall_s += time.perf_counter() - start
        result = {
            "step": self.step,
            "objective": robust_objective(per_seed, self.config.metric, self.config.mode),
            "div_rate": sum(not s.alive for s in self.seeds) / len(self.seeds),
            "collapse_rate": sum(m.get("collapsed", False) for m in per_seed.values())
            / len(self.seeds),
            "wall_s": self.wall_s,
            "samples_per_s": self._samples_per_s(),
            "device": str(self.device),
            "protocol": self.evaluator.protocol.to_json(),
            "last": self.step >= self.config.steps or not any(s.alive for s in self.seeds),
            "seeds": per_seed,
        }
        self.history.append(result)
        self.report(result)
        return result

    def _evaluate_seed(self, s: Seed) -> dict[str, Any]:
        if s.alive and not _finite_params(s):
            s.diverged_step = self.step
        if not s.alive:
            return {"diverged": True, "diverged_step": s.diverged_step}
        fake = self._generate(s)
        if not bool(torch.isfinite(fake).all()):
            s.diverged_step = self.step
            return {"diverged": True, "diverged_step": s.diverged_step}
        self.samples[s.seed] = fake[: self.config.sample_keep].cpu()
        metrics = self.evaluator(fake)
        collapsed = is_collapsed(metrics, self.data.n_modes)
        if collapsed is not None:
            metrics["collapsed"] = collapsed
        metrics.update(self._take_signals(s))
        metrics["diverged"] = False
        return metrics

    @torch.no_grad()
    def _generate(self, s: Seed) -> Tensor:
        g = s.g_ema if s.g_ema is not None else s.g
        n, chunk = self.evaluator.n_fake, 1000
        parts = [g(self._noise(min(chunk, n - i), s.eval_rng)) for i in range(0, n, chunk)]
        return torch.cat(parts)

    def _take_signals(self, s: Seed) -> dict[str, float]:
        if not s.signal_steps:
            return {}
        means = (s.signals / s.signal_steps).tolist()
        s.signals.zero_()
        s.signal_steps = 0
        return dict(zip(SIGNALS, means, strict=True))

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
            "history": copy.deepcopy(self.history),
            "samples": dict(self.samples),
            "seeds": [_seed_state(s) for s in self.seeds],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config.to_dict():
            raise ValueError("checkpoint was written by a different configuration")
        self.step, self.wall_s, self.train_s = state["step"], state["wall_s"], state["train_s"]
        self.history = copy.deepcopy(state["history"])
        self.samples = dict(state["samples"])
        for s, saved in zip(self.seeds, state["seeds"], strict=True):
            _load_seed_state(s, saved)


def _grad_norm(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def _finite_params(s: Seed) -> bool:
    params = [*s.g.parameters(), *s.d.parameters()]
    return all(bool(torch.isfinite(p).all()) for p in params)


def _seed_state(s: Seed) -> dict[str, Any]:
    return {
        "seed": s.seed,
        "g": s.g.state_dict(),
        "d": s.d.state_dict(),
        "opt_g": s.opt_g.state_dict(),
        "opt_d": s.opt_d.state_dict(),
        "g_ema": s.g_ema.state_dict() if s.g_ema is not None else None,
        "rng": s.rng.get_state(),
        "eval_rng": s.eval_rng.get_state(),
        "diverged_step": s.diverged_step,
        "signals": s.signals.clone(),
        "signal_steps": s.signal_steps,
    }


def _load_seed_state(s: Seed, saved: dict[str, Any]) -> None:
    if saved["seed"] != s.seed:
        raise ValueError(f"checkpoint seed {saved['seed']} where {s.seed} was expected")
    s.g.load_state_dict(saved["g"])
    s.d.load_state_dict(saved["d"])
    s.opt_g.load_state_dict(saved["opt_g"])
    s.opt_d.load_state_dict(saved["opt_d"])
    if s.g_ema is not None:
        s.g_ema.load_state_dict(saved["g_ema"])
    s.rng.set_state(saved["rng"])
    s.eval_rng.set_state(saved["eval_rng"])
    s.diverged_step = saved["diverged_step"]
    s.signals = saved["signals"].clone()
    s.signal_steps = saved["signal_steps"]
