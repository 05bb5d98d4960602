"""Adam over K seeds' stacked parameters, each seed with its own step count, rate and fate.

`BatchedAdam` updates a (K, P) parameter tensor (`ganlab.stacked.StackedNet.flat`) as K
torch.optim.Adam(fused=True) optimisers would update their seeds' parameters, in a constant
number of ops whatever K and however many layers: the moments are (K, P) tensors, the step
counts and learning rates (K,) tensors, so the update is capturable (no host reads, nothing
that changes between steps but tensor contents). A seed whose `alive` flag is False is skipped
whole, as the fused kernels skip a seed whose `found_inf` is 1: its step count, moments and
parameters stay exactly as they were (its gradient, maybe NaN, is replaced by 0 first, and its
factors make every update nothing: lerp by 0, multiply by 1, add 0).

The arithmetic is the fused CPU kernel's (lerp for the first moment, addcmul for the second,
bias corrections in float64): on the CPU it matches torch's to the last bit or one rounding.
`gather`/`scatter` convert from and to the seeds' own `torch.optim.Adam` states (the layout of
checkpoints).
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from ganlab.stacked import scatter_row


class BatchedAdam:
    """Adam on `param` (K, P) with `lr` for every seed; `step(alive)` takes its `.grad`."""

    def __init__(self, param: Tensor, lr: float, betas: tuple[float, float], eps: float = 1e-8):
        self.param = param
        self.beta1, self.beta2 = betas
        self.eps = eps
        k = len(param)
        self.exp_avg = torch.zeros_like(param, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        # Float32 step counts, as torch's fused Adam keeps them; float64 rates.
        self.steps = torch.zeros(k, device=param.device)
        self.lr = torch.full((k,), lr, dtype=torch.float64, device=param.device)

    @torch.no_grad()
    def step(self, alive: Tensor) -> None:
        """One update of every seed where `alive` (K,) bool; the others untouched."""
        param = self.param
        live = alive.unsqueeze(1)
        self.steps.add_(alive.float())
        # Bias corrections of at least one step: a seed dead from its first step must not
        # divide by 0, since its update is 0 times what it computes.
        steps = self.steps.double().clamp_min(1).unsqueeze(1)
        bias2_sqrt = (1 - torch.pow(self.beta2, steps)).sqrt_().float()
        step_size = (self.lr.unsqueeze(1) / (1 - torch.pow(self.beta1, steps))).float() * live
        # A dead seed's gradient may be NaN: it becomes 0 and its factors make every update
        # of it exactly nothing (lerp by 0, multiply by 1, add 0, subtract 0).
        grad = torch.where(live, param.grad, 0.0)
        self.exp_avg.lerp_(grad, (1 - self.beta1) * live)
        self.exp_avg_sq.mul_(torch.where(live, self.beta2, 1.0))
        self.exp_avg_sq.addcmul_(grad, grad, value=1 - self.beta2)
        denom = self.exp_avg_sq.sqrt().div_(bias2_sqrt).add_(self.eps)
        param.sub_(self.exp_avg.mul(step_size).div_(denom))

    # --- the seeds' own optimisers ---------------------------------------------------------

    @torch.no_grad()
    def gather(self, optimizers: Sequence[torch.optim.Optimizer], params: Sequence[list[Tensor]]):
        """Take the state of `optimizers`, one per seed, over `params[k]` (its parameters in
        the order of the stacked row)."""
        moments: dict[str, list[list[Tensor]]] = {"exp_avg": [], "exp_avg_sq": []}
        for k, (optimizer, own) in enumerate(zip(optimizers, params, strict=True)):
            states = [optimizer.state.get(p, {}) for p in own]
            started = all(states)
            for name, rows in moments.items():
                rows.append([s[name] if started else torch.zeros_like(p)
                             for s, p in zip(states, own, strict=True)])  # fmt: skip
            self.steps[k] = states[0]["step"] if started else 0.0
        self.exp_avg.copy_(_pack(moments["exp_avg"]))
        self.exp_avg_sq.copy_(_pack(moments["exp_avg_sq"]))

    @torch.no_grad()
    def scatter(self, optimizers: Sequence[torch.optim.Optimizer], params: Sequence[list[Tensor]]):
        """Write the state back into `optimizers` as torch's fused Adam keeps it: per parameter
        a float32 `step` tensor and the two moments (a fused step makes them even where it
        skips, so every seed that took part in a step has them)."""
        for k, (optimizer, own) in enumerate(zip(optimizers, params, strict=True)):
            # In the optimiser's own order of parameters: its state_dict keeps that order.
            for p in (p for group in optimizer.param_groups for p in group["params"]):
                state = optimizer.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
            states = [optimizer.state[p] for p in own]
            torch._foreach_copy_([s["step"] for s in states], [self.steps[k]] * len(states))
            for name in ("exp_avg", "exp_avg_sq"):
                scatter_row(getattr(self, name)[k], [s[name] for s in states])


def _pack(rows: Sequence[Sequence[Tensor]]) -> Tensor:
    """Per seed, a list of tensors -> (K, P): each seed's tensors flattened into its row."""
    return torch.stack([torch.cat([t.reshape(-1) for t in row]) for row in rows])
