"""A private local Ray for the sweeps a test module runs in its own process."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ganlab import preflight, raystart, spec, sweep


@contextlib.contextmanager
def private_ray() -> Iterator[None]:
    """Ray started on this machine for the block (unless this process has one already), then
    stopped with its session directory (`raystart.stop`)."""
    started = raystart.start(None)
    try:
        yield
    finally:
        raystart.stop(started)


def run_file(directory: Path, name: str, text: str) -> Path:
    """The sweep file `text`, written to `directory/<name>.yaml` and run to its end into
    `directory/runs` on the Ray this process has; its run directory."""
    path = directory / f"{name}.yaml"
    path.write_text(text)
    s = spec.load(path, storage=str(directory / "runs"))
    sweep.run(s, echo=lambda line: None)
    return preflight.run_dir_of(s)
