"""Two routes to K seeds' networks as one: ganlab's stacked layers against torch.func.vmap.

`ganlab.stacked` writes each layer with a seed dimension by hand: batched matmuls (`baddbmm`) for
linear layers, grouped convolutions (`groups=K`) over K*C channels for convolutions. The other
route keeps the seeds' own modules and maps them over stacked parameters with `torch.func.vmap`
and `functional_call` (`torch.func.stack_module_state`), leaving the batching to functorch's
rules (a convolution's is a grouped convolution with transposes around it).

For ring8/MLP and digits/DCGAN at the default sizes (no norms, no spectral norm: what both
routes run alike) and K = 3, 8, it times a forward and backward pass, D(G(z)) with gradients of
every parameter, of the K seeds one after another, of the stacked network and of the vmapped
one, repetitions interleaved, and counts their aten ops; seed-passes/s, median.

    python benchmarks/stacked_routes.py                # about a minute
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.func import functional_call, stack_module_state, vmap
from trial_throughput import OpCount  # beside this file: on the path of a script run from here

from ganlab import data as datasets
from ganlab import models, stacked
from ganlab.config import TrialConfig

CASES = {"ring8/mlp": {"dataset": "ring8", "arch": "mlp"},
         "digits/dcgan": {"dataset": "digits", "arch": "dcgan"}}  # fmt: skip


def contenders(values: dict, k: int) -> dict[str, Callable[[], None]]:
    """One forward-backward pass of K seeds' G and D by each route."""
    config = TrialConfig.from_dict({**values, "seeds": list(range(k))})
    shape = datasets.DATASETS[config.dataset].shape
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(models.build(config.arch_config, shape))
    gs, ds = [g for g, _ in nets], [d for _, d in nets]
    z = [torch.randn(config.batch_size, config.z_dim) for _ in range(k)]

    def sequential() -> None:
        sum(d(g(x)).square().mean() for g, d, x in zip(gs, ds, z, strict=True)).backward()

    g_stack, d_stack = stacked.stack(gs), stacked.stack(ds)
    z_stack = g_stack.layout.join(z)

    def hand_written() -> None:
        d_stack(g_stack(z_stack)).square().mean(1).sum().backward()

    g_params, g_buffers = stack_module_state(gs)
    d_params, d_buffers = stack_module_state(ds)
    base_g, base_d = gs[0], ds[0]

    def one(gp, gb, dp, db, x):
        fake = functional_call(base_g, (gp, gb), (x,))
        return functional_call(base_d, (dp, db), (fake,)).square().mean()

    mapped = vmap(one)
    z_vmap = torch.stack(z)

    def vmapped() -> None:
        mapped(g_params, g_buffers, d_params, d_buffers, z_vmap).sum().backward()

    return {"sequential": sequential, "stacked": hand_written, "vmap": vmapped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--passes", type=int, default=30, help="passes per repetition")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); seed-passes/s (forward and "
          f"backward of D(G(z))), median of {args.repeats}\n")  # fmt: skip
    print(f"{'case':13} {'K':>3} {'route':11} {'median':>8} {'min':>8} {'max':>8} {'ops':>6} "
          f"{'vs seq':>7}")  # fmt: skip
    for case, values in CASES.items():
        for k in args.ks:
            routes = contenders(values, k)
            rates: dict[str, list[float]] = {name: [] for name in routes}
            for run in routes.values():
                run()  # warm
            for _ in range(args.repeats):
                for name, run in routes.items():
                    start = time.perf_counter()
                    for _ in range(args.passes):
                        run()
                    rates[name].append(args.passes * k / (time.perf_counter() - start))
            sequential = statistics.median(rates["sequential"])
            for name, run in routes.items():
                with OpCount() as count:
                    run()
                median = statistics.median(rates[name])
                print(f"{case:13} {k:3d} {name:11} {median:8.0f} {min(rates[name]):8.0f} "
                      f"{max(rates[name]):8.0f} {count.n:6d} {median / sequential:7.2f}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
