"""Ray Tune's experiment state, kept whole: a good copy while the sweep runs, checked on resume.

Tune writes its experiment state (`experiment_state-*.json`, the searcher's `*.pkl`, ...) into
a staging directory on the driver and copies it, file by file and in place, into the experiment
directory on the storage. A driver killed during that copy, or a disk that fills up under it,
leaves a cut file there; `Tuner.restore` then logs "Failed to restore the run state" and starts a
new experiment, which would repeat finished trials and orphan others. So:

- while the sweep runs, `snapshot` copies the staging directory's state files, once each is
  complete (JSON that parses, pickles that reach their STOP opcode, read without running them),
  into `<run dir>/.tune-state/<generation>/`, and names the generation in `CURRENT` last: a kill
  anywhere leaves the previous generation whole;
- before a resume, `repair` checks the state files in the experiment directory; a cut one is put
  aside (`.cut-<name>`) and the last good generation is written in its place, or, without one,
  the resume is refused (`StateLost`) rather than started afresh;
- `RestoreGuard` catches Tune's own "Failed to restore" and makes it fail the resume.

At most what Tune saved after the last snapshot is lost: a report or two, which the trials'
own checkpoints hold anyway.
"""

import json
import logging
import pickletools
import re
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from ganlab import rundir
from ganlab.spec import BadInput

STATE_SUFFIXES = (".json", ".pkl")  # the files Tune restores from the experiment root
EXPERIMENT_STATE = "experiment_state-"  # Tune's file of trial statuses, one per driver session
GENERATIONS_KEPT = 2
CURRENT = "CURRENT"


class StateLost(BadInput):
    """A resume that cannot restore Tune's experiment state exactly (exit code 2)."""


def complete(data: bytes) -> bool:
    """Whether a state file's bytes are whole: a pickle that reaches its STOP opcode (Tune
    pickles some files it names `.json`, whose first byte is then the PROTO opcode), or else
    JSON that parses."""
    try:
        if data[:1] == b"\x80":
            ops = list(pickletools.genops(data))
            return ops[-1][0].name == "STOP"
        json.loads(data)
    except Exception:  # any parse error means a cut or garbled file
        return False
    return True


def state_files(directory: Path) -> dict[str, bytes]:
    """The state files directly in `directory` (not the trials' folders), by name."""
    found = {}
    for path in directory.iterdir():
        if path.is_file() and path.suffix in STATE_SUFFIXES and not path.name.startswith("."):
            found[path.name] = path.read_bytes()
    return found


def snapshot(staging: Path, run_dir: Path) -> bool:
    """Keep Tune's staged state in a new generation when every file is complete and any
    changed; False (nothing kept) otherwise. Call it where Tune is not writing (a callback)."""
    files = state_files(staging)
    if not any(name.startswith(EXPERIMENT_STATE) for name in files):
        return False
    if not all(complete(data) for data in files.values()) or files == good(run_dir):
        return False
    root = run_dir / rundir.TUNE_STATE
    number = _current_number(root) + 1
    generation = root / f"{number:06d}"
    for name, data in files.items():
        rundir.atomic_write_bytes(generation / name, data)
    rundir.atomic_write_text(root / CURRENT, f"{number:06d}\n")
    for old in sorted(p for p in root.iterdir() if p.is_dir())[:-GENERATIONS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    return True


def good(run_dir: Path) -> dict[str, bytes]:
    """The last good generation's files ({} when none was kept)."""
    root = run_dir / rundir.TUNE_STATE
    number = _current_number(root)
    return state_files(root / f"{number:06d}") if number else {}


def _current_number(root: Path) -> int:
    try:
        return int((root / CURRENT).read_text().strip())
    except (OSError, ValueError):
        return 0


def problems(fs: pafs.FileSystem, experiment: str) -> list[str]:
    """What keeps the experiment directory's state from being restored: its state files that
    are cut or garbled, by name, or the want of any experiment state."""
    bad, found = [], False
    for info in fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.File or not name.endswith(STATE_SUFFIXES):
            continue
        if name.startswith("."):
            continue
        found = found or name.startswith(EXPERIMENT_STATE)
        with fs.open_input_stream(info.path) as stream:
            if not complete(stream.read()):
                bad.append(name)
    return bad if found else [*bad, f"no {EXPERIMENT_STATE}*.json"]


def finished_any(fs: pafs.FileSystem, experiment: str) -> bool:
    """Whether a trial of the experiment reported its last result (in its result file)."""
    selector = pafs.FileSelector(experiment, allow_not_found=True, recursive=True)
    for info in fs.get_file_info(selector):
        if info.base_name == rundir.RESULT_FILE and info.size:
            with fs.open_input_stream(info.path) as stream:
                if any(json.loads(line).get("last") for line in stream.read().splitlines()
                       if line.strip().endswith(b"}")):  # fmt: skip
                    return True
    return False


def repair(fs: pafs.FileSystem, experiment: str, run_dir: Path, bad: list[str], echo) -> bool:
    """Put the cut state files `bad` aside and write the last good generation in their place;
    False where no good generation was kept."""
    kept = good(run_dir)
    if not any(name.startswith(EXPERIMENT_STATE) for name in kept):
        return False
    for name in bad:
        if fs.get_file_info(f"{experiment}/{name}").type == pafs.FileType.File:
            fs.move(f"{experiment}/{name}", f"{experiment}/.cut-{name}")
    for name, data in kept.items():
        with fs.open_output_stream(f"{experiment}/{name}") as stream:
            stream.write(data)
    echo(f"Ray Tune's experiment state was cut ({', '.join(bad)}); resuming from the last good "
         f"copy in {run_dir / rundir.TUNE_STATE} (the cut files are kept as .cut-*)")  # fmt: skip
    return True


def realign_checkpoints(fs: pafs.FileSystem, experiment: str, echo) -> None:
    """Give each trial the checkpoint Tune's saved state names as its latest.

    Tune's state may lag the trials (saved every few seconds, or restored from the last good
    copy), and Ray keeps only the newest checkpoints: the one the state names may be gone while
    newer ones exist, and Ray would fail the trial for good ("does not exist on storage
    anymore"). The newest whole checkpoint then takes the named one's place (the others newer
    than it are removed), so the trial goes on from its newest state under Ray's numbering."""
    for trial_id, named in _named_checkpoints(fs, experiment).items():
        trial_dir = f"{experiment}/{rundir.trial_dir_name(trial_id)}"
        target = f"{trial_dir}/{named}"
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            continue
        infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        numbers = {rundir.checkpoint_number(i.base_name): i.path for i in infos}
        newer = sorted(n for n in numbers if n is not None and n > rundir.checkpoint_number(named))
        whole = [n for n in newer if _whole(fs, numbers[n])]
        if not whole:
            continue
        fs.move(numbers[whole[-1]], target)
        for n in newer:
            if n != whole[-1]:
                fs.delete_dir(numbers[n])
        echo(f"trial {trial_id}: Tune's state names {named}, which Ray had removed; its newest "
             f"checkpoint takes its place")  # fmt: skip


def _whole(fs: pafs.FileSystem, checkpoint: str) -> bool:
    names = (rundir.STATE_FILE, rundir.SAMPLES_FILE)
    return all(fs.get_file_info(f"{checkpoint}/{n}").type == pafs.FileType.File for n in names)


def _named_checkpoints(fs: pafs.FileSystem, experiment: str) -> dict[str, str]:
    """trial id -> the newest checkpoint directory Tune's newest experiment state names."""
    infos = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
    states = sorted(i.path for i in infos if i.base_name.startswith(EXPERIMENT_STATE))
    if not states:
        return {}
    with fs.open_input_stream(states[-1]) as stream:
        state = json.loads(stream.read())
    named = {}
    for trial_json, metadata in state.get("trial_data", []):
        trial_id = json.loads(trial_json)["trial_id"]
        text = metadata + "".join(  # Tune keeps the checkpoints' paths cloudpickled, in hex
            bytes.fromhex(h).decode("latin-1") for h in HEX.findall(metadata)
        )
        found = sorted(set(CHECKPOINT.findall(text)))
        if found:
            named[trial_id] = found[-1]
    return named


HEX = re.compile(r'"value": "([0-9a-f]{40,})"')
CHECKPOINT = re.compile(r"checkpoint_\d{6}")


def lost(experiment: str, run_dir: Path, bad: list[str]) -> StateLost:
    return StateLost(
        f"{experiment}: Ray Tune's experiment state is cut ({', '.join(bad)}: a driver killed "
        "or a disk full while Tune wrote it) and no good copy was kept in "
        f"{run_dir / rundir.TUNE_STATE}; --resume would start the sweep over, so it stops "
        "here. The tables keep every trial collected so far."
    )


class RestoreGuard(logging.Handler):
    """While active, notes Tune's "Failed to restore the run state", after which Tune would
    start a new experiment; `check_restored` (called from a callback's `setup`, which Tune runs
    after its restore and before any trial) then refuses to go on. Logging is process-wide, and
    so is the guard: the callbacks, which Tune pickles, hold no reference to it."""

    LOGGER = "ray.tune.execution.tune_controller"
    active: "RestoreGuard | None" = None

    def __init__(self, experiment: str) -> None:
        super().__init__(logging.ERROR)
        self.experiment = experiment
        self.failed: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "Failed to restore the run state" in record.getMessage():
            error = record.exc_info[1] if record.exc_info else None
            self.failed = f"{type(error).__name__}: {error}" if error else "no reason given"

    def __enter__(self) -> "RestoreGuard":
        logging.getLogger(self.LOGGER).addHandler(self)
        RestoreGuard.active = self
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)
        RestoreGuard.active = None


def check_restored() -> None:
    """Raise `StateLost` if the active guard saw Tune fail to restore its state."""
    guard = RestoreGuard.active
    if guard is not None and guard.failed is not None:
        raise StateLost(
            f"{guard.experiment}: Ray Tune could not restore the sweep's state "
            f"({guard.failed}) and would start it over; --resume stops here, nothing was run. "
            "The tables keep every trial collected so far."
        )
