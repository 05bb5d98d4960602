"""A fault campaign: a real sweep on local Ray killed (SIGKILL) again and again, at write sites
and at random times, resumed after each kill, and checked after every resume.

    python benchmarks/fault_campaign.py [--campaigns 4] [--seed 0]

Each campaign runs the sweep of tests/faults.py (four trials of ring8, two seeds) under a list of
faults: a kill in the middle of an Optuna journal append, of Tune's copy of its experiment
state, of a table file's write (before its rename), and kills at random times. After each
resume it compares the tables with what they held before: a finished trial's rows must stay as
they were (lost, changed or doubled rows are counted), and at the end every trial must be in the
tables once, the journal must agree with them and hold no RUNNING trial. Prints the counts; exits
1 if a row was lost, changed or doubled, or a resume was refused.
"""

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import faults

SITES = ("journal", "state", "table")


def faults_of(rng: random.Random, kills: int) -> list[str]:
    """`kills` faults: each write site at a random call, and random times."""
    chosen = [f"{site}:{rng.randint(2, 12)}" for site in SITES]
    chosen += [f"time:{rng.uniform(10, 60):.1f}" for _ in range(kills - len(chosen))]
    rng.shuffle(chosen)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=4)
    parser.add_argument("--kills", type=int, default=6, help="faults per campaign")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    total: dict[str, int] = {}
    for number in range(args.campaigns):
        plan = faults_of(rng, args.kills)
        print(f"campaign {number + 1}: {', '.join(plan)}")
        workdir = Path(tempfile.mkdtemp(prefix="ganlab-campaign-"))
        counts = faults.campaign(workdir, plan, steps=400, echo=lambda s: print("  " + s))
        shutil.rmtree(workdir)  # kept where the campaign failed, to look at
        print(f"  {counts}")
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    print("total: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    bad = total["rows_lost"] + total["rows_changed"] + total["rows_doubled"] + total["refused"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
