"""The Optuna journal of a sweep, on a disk that may fill up under a driver that may be killed.

Optuna appends each change of its study to one file as a JSON line. A write cut short (a kill,
a full disk) leaves a line without its newline; Optuna skips such a last line when it reads, but
the next append would glue a whole line to it and make the study unreadable. So:

- `JournalFile` cuts a partial last line off when it opens the file, or is unpickled with a
  resumed searcher (a resume after a kill), and `cut_partial_line` does it for any journal;
- an append that fails for lack of space is undone (the file is truncated back to where it was)
  and tried again after a pause that doubles up to `RETRY_MAX_S`: the sweep waits for space
  instead of dying, and says so on stderr.
"""

import errno
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna

RETRY_FIRST_S, RETRY_MAX_S = 2.0, 60.0
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class JournalFile(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file backend that never leaves a partial line behind."""

    def __init__(self, path: str | os.PathLike):
        cut_partial_line(Path(path))
        super().__init__(str(path))
        self.path = Path(path)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled with a resumed searcher, not built: cut a partial line here too.
        self.__dict__.update(state)
        cut_partial_line(self.path)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        delay = RETRY_FIRST_S
        while True:
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                return super().append_logs(logs)
            except OSError as error:
                if error.errno not in NO_SPACE:
                    raise
                _truncate(self.path, size)
                print(
                    f"the Optuna journal {self.path} cannot be written ({error.strerror}); "
                    f"the sweep waits, trying again in {delay:.0f}s",
                    file=sys.stderr,
                )
                time.sleep(delay)
                delay = min(RETRY_MAX_S, 2 * delay)


def cut_partial_line(path: Path) -> bool:
    """Truncate `path` after its last newline, if it ends inside a line; True if it did."""
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    _truncate(path, data.rfind(b"\n") + 1)
    return True


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        os.truncate(path, size)


def journal_storage(path: Path) -> optuna.storages.JournalStorage:
    """The study storage of the journal at `path`."""
    return optuna.storages.JournalStorage(JournalFile(path))
