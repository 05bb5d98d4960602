"""One sweep at a time in a run directory.

Two sweeps of one name at once would write into one Ray experiment and one Optuna study. A sweep
holds an exclusive `flock` on `<run dir>/.sweep.lock` while it runs; the kernel releases it when
the process ends however it ends, so a killed sweep leaves no stale lock behind. The file holds
who took it, for the message that refuses a second sweep. (On a shared file system, flock reaches
other machines only where that file system supports it; NFSv4 does.) The file is opened without
following a symbolic link, and a file with other names (a hard link) is refused: a `.sweep.lock`
linked to another file would have the sweep truncate and overwrite that file (`preflight`
refuses a run directory holding a symbolic link before this is reached).
"""

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from ganlab.rundir import LOCK_FILE
from ganlab.spec import BadInput

NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class LinkedLock(BadInput):
    """The run directory's lock file is a symbolic link (exit code 2)."""


class Locked(RuntimeError):
    """Another sweep holds the run directory; `holder` says which (pid, host, since)."""

    def __init__(self, run_dir: Path, holder: str):
        super().__init__(f"another sweep is running in {run_dir} ({holder})")
        self.run_dir, self.holder = run_dir, holder


def holder(run_dir: Path) -> str | None:
    """Who holds the lock now, or None; writes nothing."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | NO_FOLLOW)
    except (FileNotFoundError, NotADirectoryError):  # no sweep has run there
        return None
    except OSError as error:  # a link (ELOOP), which no sweep of ours holds
        if error.errno == errno.ELOOP:
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(path)
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; raises Locked if another sweep has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise LinkedLock(
            f"{path} is a symbolic link (to {os.readlink(path)}); a sweep's lock "
            "is a file of its run directory: remove the link"
        ) from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:  # truncating would reach
            raise LinkedLock(f"{path} is not a file of its own (a hard link, a device...); "
                             "a sweep's lock is: remove it")  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(run_dir, _describe(path)) from None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _describe(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | NO_FOLLOW)
    except OSError:
        return "holder unknown"
    with os.fdopen(fd, encoding="utf-8", errors="replace") as file:
        return file.read(1000).strip() or "holder unknown"
