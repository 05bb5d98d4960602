"""Where a sweep's results live: a local directory, or a URI every node can write to.

With a URI (`s3://bucket/prefix`, `gs://...`, `file:///shared/runs`), Ray writes trial results
and checkpoints there; the driver keeps its tables, journal and report in a local run directory,
pulling the results it needs down before collecting and pushing the tables up afterwards.
"""

from pathlib import Path

import pyarrow.fs as pafs

# What `results.collect` reads of each trial: its reports, its error, its latest samples.
TRIAL_FILES = ("result.json", "error.txt", "params.json")
SAMPLES_FILE = "samples.pt"
PUSHED = ("trials.parquet", "metrics.parquet", "samples.parquet", "report.html",
          "optuna-journal.log")  # fmt: skip


def is_uri(storage: str) -> bool:
    return "://" in storage


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    fs, path = _open(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def pull_results(experiment_uri: str, local: Path) -> None:
    """Copy each trial's reports, errors and latest samples from the experiment to `local`."""
    fs, root = _open(experiment_uri)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return
    latest: dict[str, str] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = info.path[len(root.rstrip("/")) + 1 :]
        parts = relative.split("/")
        if len(parts) == 2 and parts[1] in TRIAL_FILES:
            _copy(fs, info.path, local / relative)
        elif len(parts) == 3 and parts[2] == SAMPLES_FILE:
            latest[parts[0]] = max(latest.get(parts[0], ""), relative)  # checkpoint_00000N
    for relative in latest.values():
        _copy(fs, f"{root.rstrip('/')}/{relative}", local / relative)


def push_outputs(local: Path, run_uri: str) -> None:
    """Copy the tables, the report and the journal next to Ray's experiment on the storage."""
    fs, root = _open(run_uri)
    fs.create_dir(root, recursive=True)
    for name in PUSHED:
        if (local / name).exists():
            with (local / name).open("rb") as src, fs.open_output_stream(f"{root}/{name}") as dst:
                dst.write(src.read())


def _copy(fs: pafs.FileSystem, path: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    with fs.open_input_stream(path) as src:
        tmp.write_bytes(src.read())
    tmp.replace(target)
