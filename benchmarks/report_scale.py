"""How long `ganlab report` takes on a big run, and how big the page gets.

Generates a synthetic run of 10,000 trial × seed rows (2,500 configurations × 4 seeds) with 50
evaluations each (500,000 metric rows) using the tests' table generator, then builds the report
in a fresh Python process, as `ganlab report RUN_DIR` would, and prints the build time (goal
≤ 15 s) and the HTML size (goal ≤ 20 MB). It also checks that the best-ranked configurations
are all in the page: downsampling may drop curves, never the best ones.

    python benchmarks/report_scale.py                    # ring8: 2-D samples
    python benchmarks/report_scale.py --dataset digits   # image samples
    python benchmarks/report_scale.py --journal          # importance from an Optuna journal
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

BUILD = """
import json, sys, time
start = time.perf_counter()
from analysis.report import write_report
imported = time.perf_counter()
path = write_report(sys.argv[1], progress=lambda line: print(f"  {line}", file=sys.stderr))
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "build_s": done - imported, "path": str(path)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2500)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--dataset", default="ring8", choices=["ring8", "digits"])
    parser.add_argument("--journal", action="store_true", help="write an Optuna journal study")
    parser.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = parser.parse_args()

    from runs import make_run

    with tempfile.TemporaryDirectory(prefix="ganlab-bench-") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        start = time.perf_counter()
        make_run(
            run_dir,
            n_configs=args.configs,
            seeds=args.seeds,
            evals=args.evals,
            dataset=args.dataset,
            with_journal=args.journal,
        )
        generated = time.perf_counter() - start
        wall = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", BUILD, str(run_dir)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            env=_env(),
        )
        wall = time.perf_counter() - wall
        timing = json.loads(out.stdout.strip().splitlines()[-1])
        report = Path(timing["path"])
        size = report.stat().st_size
        missing = _missing_best(run_dir, report.read_text())
        import pandas as pd

        from ganlab import rundir

        rows = len(pd.read_parquet(run_dir / rundir.TRIALS))
        evaluations = len(pd.read_parquet(run_dir / rundir.METRICS_TABLE))
    kind = args.dataset + (", journal" if args.journal else "")
    print(
        f"rows: {rows} trial × seed, {evaluations} metric rows ({kind}); "
        f"tables generated in {generated:.1f} s"
    )
    print(
        f"report build: {timing['build_s']:.2f} s (+ {timing['import_s']:.2f} s imports; "
        f"{wall:.2f} s wall for the whole process)   goal ≤ 15 s"
    )
    print(f"report size: {size / 1e6:.2f} MB   goal ≤ 20 MB")
    print(f"best-ranked configurations missing from the page: {missing or 'none'}")
    if missing or size > 20e6 or wall > 15:
        sys.exit(1)


def _env() -> dict:
    import os

    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _missing_best(run_dir: Path, page: str, top: int = 8) -> list[str]:
    """Config ids of the `top` best-ranked configurations missing from the convergence
    curves (the one figure that downsamples configurations)."""
    from analysis.aggregate import config_stats
    from ganlab.results import load

    trials, _ = load(run_dir)
    best = config_stats(trials).head(top).index
    section = page.split('<section id="convergence">', 1)[1].split("</section>", 1)[0]
    return [c for c in best if c not in section]


if __name__ == "__main__":
    main()
