"""Where a sweep's results live: a local directory, or a URI every node can write to.

With a URI (`s3://bucket/prefix`, `gs://...`, `file:///shared/runs`), Ray writes trial results
and checkpoints there; the driver keeps its tables, journal and report in a local run directory,
reads what it collects straight from the URI, and pushes what it wrote back next to Ray's
experiment. The endpoint and credentials come from the environment, as pyarrow reads them
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ... for S3), or from the URI's query
(`s3://bucket/runs?endpoint_override=http://host:9000`).

One driver writes a URI's run at a time: it holds a lease there (`writer_lease`), an object it
renews while it runs, and a second driver, from any machine, is refused while the lease is live.
`open_run` gives a local copy of a URI's run for reading (`ganlab results`, `report`).
"""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.fs as pafs

from ganlab.rundir import EXPERIMENT, TABLES, WRITER_LEASE, atomic_write_bytes

LEASE_TTL_S = 180.0  # a lease not renewed for this long was left by a driver that died
LEASE_RENEW_S = 30.0  # how often a running driver renews its lease
LEASE_SETTLE_S = 1.0  # written, then read back after this: of two drivers at once, one wins
CACHE_ENV = "GANLAB_CACHE"  # (ganlab.metrics.cache's, which imports torch)
_held: "WriterLease | None" = None  # the lease this process holds (`writer_lease`)


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


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


# --- one writer per run ---------------------------------------------------------------------


class Taken(RuntimeError):
    """Another driver holds the lease of the run at `uri`; `holder` says which."""

    def __init__(self, uri: str, holder: str):
        super().__init__(f"another sweep writes {uri} ({holder})")
        self.uri, self.holder = uri, holder


class WriterLease:
    """This driver's lease on a run under a URI; `renew` it while the sweep runs."""

    def __init__(self, run_uri: str):
        self.uri = f"{run_uri}/{WRITER_LEASE}"
        self.token = uuid.uuid4().hex
        self.next_renew = 0.0

    def write(self) -> None:
        record = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                  "renewed": time.time()}  # fmt: skip
        fs, path = open_uri(self.uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(json.dumps(record).encode())
        self.next_renew = time.monotonic() + LEASE_RENEW_S

    def renew(self) -> str | None:
        """Renew the lease when it is due; a problem (the storage unreachable) as text."""
        if time.monotonic() < self.next_renew:
            return None
        try:
            self.write()
        except OSError as error:
            self.next_renew = time.monotonic() + LEASE_RENEW_S
            return f"renewing the lease {self.uri} failed ({error})"
        return None

    def release(self) -> None:
        found = _read_lease(self.uri)
        if found is not None and found.get("token") == self.token:
            fs, path = open_uri(self.uri)
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(path)


@contextlib.contextmanager
def writer_lease(run_uri: str) -> Iterator[WriterLease]:
    """Hold the lease of the run at `run_uri` for the block; raises `Taken` while another
    driver's lease is live (renewed within LEASE_TTL_S, and on this machine, its process
    alive). Without a conditional write in every object store, two drivers starting within
    LEASE_SETTLE_S of each other are told apart by reading the lease back: the last write wins
    and the other driver is refused."""
    lease = WriterLease(run_uri)
    found = _read_lease(lease.uri)
    if found is not None and _is_live(found):
        raise Taken(run_uri, _describe(found))
    lease.write()
    time.sleep(LEASE_SETTLE_S)
    found = _read_lease(lease.uri)
    if found is None or found.get("token") != lease.token:
        raise Taken(run_uri, _describe(found) if found else "holder unknown")
    global _held
    _held = lease
    try:
        yield lease
    finally:
        _held = None
        lease.release()


def renew_lease() -> str | None:
    """Renew the lease this process holds, if any, when it is due; a problem as text."""
    return None if _held is None else _held.renew()


def _read_lease(uri: str) -> dict | None:
    text = read_text(uri)
    if text is None:
        return None
    try:
        found = json.loads(text)
    except json.JSONDecodeError:  # cut short: no driver wrote it whole, so none holds it
        return None
    return found if isinstance(found, dict) else None


def _is_live(found: dict) -> bool:
    if time.time() - float(found.get("renewed", 0)) > LEASE_TTL_S:
        return False
    if found.get("host") == socket.gethostname():  # this machine: its process tells
        try:
            os.kill(int(found.get("pid", 0)), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process, alive
            return True
    return True


def _describe(found: dict) -> str:
    age = time.time() - float(found.get("renewed", 0))
    return (f"pid {found.get('pid')} on {found.get('host')}, lease renewed {age:.0f}s ago; "
            f"a lease not renewed for {LEASE_TTL_S:.0f}s is free")  # fmt: skip


# --- reading a run under a URI ----------------------------------------------------------------


def open_run(location: str | os.PathLike) -> Path:
    """A local directory holding the run at `location`, for reading: a local path as it is; for
    a URI, a fresh copy of the run's tables, journal, record and report (not Ray's experiment)
    in the cache (`$GANLAB_CACHE/remote-runs/`). Raises FileNotFoundError where there is none."""
    if not is_uri(location):
        return Path(location)
    uri = str(location).rstrip("/")
    fs, root = open_uri(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{uri}: no run there")
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ganlab").expanduser()
    local = cache / "remote-runs" / hashlib.sha1(uri.encode()).hexdigest()[:12] / Path(root).name
    for table in TABLES:  # parts merged away on the storage must not linger here
        shutil.rmtree(local / table, ignore_errors=True)
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        name = info.path[len(root) :].lstrip("/")
        if info.type != pafs.FileType.File or name.split("/")[0] in (EXPERIMENT, WRITER_LEASE):
            continue
        with fs.open_input_stream(info.path) as src:
            atomic_write_bytes(local / name, src.read())
    return local
