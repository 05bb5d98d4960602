"""Where a sweep's results live: a local directory, or a URI every node can write to.

With a URI (`s3://bucket/prefix`, `gs://...`, `file:///shared/runs`), Ray writes trial results
and checkpoints there; the driver keeps its tables, journal and report in a local run directory,
reads what it collects straight from the URI, and pushes what it wrote back next to Ray's
experiment.
"""

import contextlib
from collections.abc import Iterable
from pathlib import Path

import pyarrow.fs as pafs

from ganlab.rundir import atomic_write_bytes


def open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    fs, path = open_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(uri: str) -> str | None:
    """A small file's text, or None where there is none."""
    fs, path = open_uri(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode()
    except FileNotFoundError:
        return None


def push(local: Path, run_uri: str, relative: Iterable[str | Path]) -> None:
    """Copy files of the local run directory to the same places under `run_uri`."""
    fs, root = open_uri(run_uri)
    for name in relative:
        source = local / name
        if not source.exists():
            continue
        target = f"{root}/{Path(name).as_posix()}"
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with source.open("rb") as src, fs.open_output_stream(target) as dst:
            dst.write(src.read())


def delete(run_uri: str, relative: Iterable[str | Path]) -> None:
    """Delete files under `run_uri` (parts merged into a segment); missing ones are fine."""
    fs, root = open_uri(run_uri)
    for name in relative:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(f"{root}/{Path(name).as_posix()}")


def pull(run_uri: str, local: Path, relative: Iterable[str]) -> None:
    """Copy files from under `run_uri` into the local run directory, where they are missing."""
    fs, root = open_uri(run_uri)
    for name in relative:
        target = local / name
        if target.exists() or fs.get_file_info(f"{root}/{name}").type != pafs.FileType.File:
            continue
        with fs.open_input_stream(f"{root}/{name}") as src:
            atomic_write_bytes(target, src.read())
