"""`ganlab sweep` refuses what cannot run before Ray starts: exit 2, the sweep file named, nothing
written, nothing already there lost. Errors that are not the user's input keep their traceback."""

import dataclasses
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from runs import make_run

from ganlab import preflight, results, rundir, runlock, sweep
from ganlab import spec as specs
from ganlab.cli import main

SWEEP = """
name: t
base: {dataset: ring8, steps: 40, eval_every: 20, width: 16}
search:
  lr_d: {choice: [1.0e-4, 1.0e-3]}
seeds: 2
search_alg: grid
objective: {metric: fid, mode: min}
"""


def write(tmp_path: Path, text: str = SWEEP) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2, return its one-line error."""
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def started(tmp_path: Path, path: Path) -> Path:
    """A run directory as a started sweep leaves it: Ray's experiment and the sweep's record."""
    spec = specs.load(path, storage=str(tmp_path / "runs"))
    run_dir = preflight.run_dir_of(spec)
    (run_dir / rundir.EXPERIMENT).mkdir(parents=True)
    preflight.write_record(spec, run_dir)
    return run_dir


def test_a_second_sweep_of_the_same_name_is_refused_while_one_runs(tmp_path, capsys):
    path = write(tmp_path)
    runs = tmp_path / "runs"
    run_dir = runs / "t"
    with runlock.hold(run_dir):  # what a running sweep holds
        error = refused(capsys, ["sweep", str(path), "--storage", str(runs)])
        spec = specs.load(path, storage=str(runs))
        with pytest.raises(preflight.SweepError, match="another sweep named 't' is running"):
            sweep.run(spec)  # started anyway, e.g. between the check and the lock: still refused
    assert error.startswith(f"ganlab sweep: error: {path}: another sweep named 't' is running ")
    assert f"in {run_dir} (pid {os.getpid()} on " in error and "another `name`" in error
    assert sorted(p.name for p in run_dir.iterdir()) == [rundir.LOCK_FILE]
    assert runlock.holder(run_dir) is None  # released with the block


def test_resume_refuses_num_samples_and_a_changed_search(tmp_path, capsys):
    path = write(tmp_path)
    run_dir = started(tmp_path, path)
    runs = str(tmp_path / "runs")
    error = refused(capsys, ["sweep", str(path), "--storage", runs, "--resume",
                             "--num-samples", "5"])  # fmt: skip
    assert error == (f"ganlab sweep: error: {path}: --num-samples cannot change a sweep being "
                     "resumed: --resume runs the samples it was started with")  # fmt: skip

    write(
        tmp_path,
        SWEEP.replace("[1.0e-4, 1.0e-3]", "[1.0e-4, 3.0e-3]").replace("seeds: 2", "seeds: 3"),
    )
    error = refused(capsys, ["sweep", str(path), "--storage", runs, "--resume"])
    assert error.startswith(f"ganlab sweep: error: {path}: --resume continues the sweep as it was "
                            "started, and Ray and Optuna would ignore a change, but search, seeds "
                            "changed (search was ")  # fmt: skip
    assert "0.001" in error and "0.003" in error and "seeds was [0, 1], now [0, 1, 2]" in error
    assert "another `name`" in error
    assert sorted(p.name for p in run_dir.iterdir()) == [rundir.RECORD, rundir.EXPERIMENT]

    write(tmp_path)  # as it was: accepted (checked only, not run here)
    spec = specs.load(path, storage=runs)
    assert preflight.check(spec, resume=True, address=None) == run_dir


def test_storage_that_is_a_file_is_refused(tmp_path, capsys):
    path = write(tmp_path)
    storage = tmp_path / "runs"
    storage.write_text("not a directory")
    for where in (storage, storage / "deeper"):
        error = refused(capsys, ["sweep", str(path), "--storage", str(where)])
        assert error == (f"ganlab sweep: error: {path}: storage: {storage} is a file, not a "
                         "directory; set `storage:` (or --storage) to a directory")  # fmt: skip
    assert storage.read_text() == "not a directory"


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write in, root or not (root ignores permission bits,
    not the immutable attribute)."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() == 0:
        if (
            not shutil.which("chattr")
            or subprocess.run(["chattr", "+i", str(directory)]).returncode
        ):
            pytest.skip("no chattr +i here: cannot make a directory root cannot write")
        yield directory
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)


def test_storage_that_cannot_be_written_is_refused(tmp_path, read_only_dir, capsys):
    path = write(tmp_path)
    error = refused(capsys, ["sweep", str(path), "--storage", str(read_only_dir / "runs")])
    assert error == (f"ganlab sweep: error: {path}: storage: cannot write in {read_only_dir} (no "
                     "permission, or a read-only file system); set `storage:` (or --storage) to "
                     "a directory you can write")  # fmt: skip
    assert list(read_only_dir.iterdir()) == []


def test_more_resources_than_this_machine_has_are_refused(tmp_path, capsys):
    path = write(tmp_path, SWEEP + "resources: {cpu: 4096}\n")
    error = refused(capsys, ["sweep", str(path), "--storage", str(tmp_path / "runs")])
    cpus = sweep.ray._private.utils.get_num_cpus()
    assert error == (
        f"ganlab sweep: error: {path}: resources.cpu: a trial asks for 4096 CPU, but this "
        f"machine has {cpus}, so on a local Ray it would wait forever; ask for at most {cpus}, "
        "or join a cluster that has them with --address"
    )
    assert not (tmp_path / "runs").exists()


def test_an_internal_error_is_not_bad_input(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", n_configs=2, seeds=2, evals=2)

    def broken(trials):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(results, "summarise", broken)
    with pytest.raises(ValueError, match="a bug, not the user's input"):  # traceback, exit 1
        main(["results", str(run)])


def test_a_lock_file_that_links_elsewhere_is_refused_and_its_target_left_alone(tmp_path, capsys):
    path = write(tmp_path)
    runs = tmp_path / "runs"
    run_dir = runs / "t"
    run_dir.mkdir(parents=True)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (run_dir / rundir.LOCK_FILE).symlink_to(precious)
    error = refused(capsys, ["sweep", str(path), "--storage", str(runs)])
    assert error == (
        f"ganlab sweep: error: {path}: run directory {run_dir}: {run_dir / rundir.LOCK_FILE} is a "
        f"symbolic link (to {precious}); neither ganlab nor Ray makes one there, and the sweep "
        "would write through it onto what it points to. Remove it, or give the sweep another "
        "`name`"
    )
    assert precious.read_text() == "keep me"
    # had preflight not been asked, or the link come after it:
    with pytest.raises(runlock.LinkedLock, match="is a symbolic link"), runlock.hold(run_dir):
        pass
    assert precious.read_text() == "keep me"
    (run_dir / rundir.LOCK_FILE).unlink()
    os.link(precious, run_dir / rundir.LOCK_FILE)  # a hard link: the same file, truncated
    with pytest.raises(runlock.LinkedLock, match="not a file of its own"), runlock.hold(run_dir):
        pass
    assert precious.read_text() == "keep me"


def test_a_table_that_links_out_of_the_run_directory_is_refused(tmp_path, capsys):
    path = write(tmp_path)
    run_dir = started(tmp_path, path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / rundir.TRIALS).symlink_to(elsewhere, target_is_directory=True)
    error = refused(capsys, ["sweep", str(path), "--storage", str(tmp_path / "runs"), "--resume"])
    assert f"{run_dir / rundir.TRIALS} is a symbolic link (to {elsewhere})" in error
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("target", "change", "problem"),
    [
        (f"{rundir.EXPERIMENT}/tuner.pkl", lambda p: (p.chmod(0o664), os.chown(p, -1, 54321)),
         "is writable by its group gid 54321, which is not yours alone (mode -rw-rw-r--)"),
        (rundir.EXPERIMENT, lambda p: p.chmod(0o757),
         "is writable by every user (mode drwxr-xrwx)"),
        (rundir.RECORD, lambda p: os.chown(p, 54321, -1),
         "is owned by uid 54321, not by you ({me})"),
        (rundir.JOURNAL, lambda p: p.chmod(0o646), "is writable by every user (mode -rw-r--rw-)"),
        (f"{rundir.EXPERIMENT}/experiment_state-2026.json", lambda p: p.chmod(0o666),
         "is writable by every user (mode -rw-rw-rw-)"),
        (".", lambda p: p.chmod(0o777), "is writable by every user (mode drwxrwxrwx)"),
    ],
    ids=["tuner.pkl group", "tune other", "record owner", "journal", "state json", "run dir"],
)  # fmt: skip
def test_resume_refuses_a_run_directory_others_can_write(tmp_path, capsys, target, change,
                                                        problem):  # fmt: skip
    import pwd

    if os.geteuid() != 0 and "54321" in problem:
        pytest.skip("only root can give a file away")
    path = write(tmp_path)
    run_dir = started(tmp_path, path)
    for name in ("tuner.pkl", "experiment_state-2026.json"):
        (run_dir / rundir.EXPERIMENT / name).write_bytes(b"\x80\x05N.")  # a pickle of None
    (run_dir / rundir.JOURNAL).write_text("")
    runs = str(tmp_path / "runs")
    spec = specs.load(path, storage=runs)
    assert preflight.check(spec, resume=True, address=None) == run_dir  # as made: trusted
    victim = (run_dir / target).resolve()
    change(victim)
    me = f"{pwd.getpwuid(os.geteuid()).pw_name!r} (uid {os.geteuid()})"
    error = refused(capsys, ["sweep", str(path), "--storage", runs, "--resume"])
    assert error.startswith(f"ganlab sweep: error: {path}: --resume: {victim} "
                            f"{problem.format(me=me)}. Resuming unpickles Ray's "
                            "saved state from the run directory, which runs any code put "
                            "there")  # fmt: skip


def test_a_group_of_one_may_write_a_resumed_run(tmp_path, monkeypatch):
    """With a umask of 002, files are group-writable; a user's private group is the user."""
    import grp
    import pwd

    path = write(tmp_path)
    run_dir = started(tmp_path, path)
    (run_dir / rundir.RECORD).chmod(0o664)
    spec = specs.load(path, storage=str(tmp_path / "runs"))
    me = pwd.getpwuid(os.geteuid())
    group = grp.struct_group(("me", "x", run_dir.stat().st_gid, []))
    monkeypatch.setattr(grp, "getgrgid", lambda gid: group)
    monkeypatch.setattr(pwd, "getpwall", lambda: [me])
    assert preflight.check(spec, resume=True, address=None) == run_dir
    other = pwd.struct_passwd(("other", "x", 54321, group.gr_gid, "", "/", "/bin/sh"))
    monkeypatch.setattr(pwd, "getpwall", lambda: [me, other])  # someone else's group too
    with pytest.raises(preflight.SweepError, match="writable by its group 'me', which is not"):
        preflight.check(spec, resume=True, address=None)


@pytest.mark.parametrize("smoke", [False, True], ids=["full size", "smoke"])
def test_a_sweep_whose_trials_cannot_fit_this_machine_is_refused(tmp_path, capsys, monkeypatch,
                                                                 smoke):  # fmt: skip
    from ganlab import budget

    path = write(tmp_path)
    runs = tmp_path / "runs"
    spec = specs.load(path, smoke=smoke)
    _, found = budget.largest(spec)
    memory = int(found.total * 1.5)  # one trial fits, not two at once
    monkeypatch.setattr(budget, "machine_memory", lambda: memory)
    flags = ["--smoke"] if smoke else []
    error = refused(capsys, ["sweep", str(path), "--storage", str(runs), *flags])
    assert error.startswith(f"ganlab sweep: error: {path}: ")
    assert f"more than the {budget.size(memory / 2)} of this machine's {budget.size(memory)} " \
           "that each of the 2 trials running at once gets" in error  # fmt: skip
    assert not runs.exists()
    monkeypatch.setattr(budget, "machine_memory", lambda: int(found.total * 2))
    assert budget.check_sweep(dataclasses.replace(spec, path=str(path)), None) is None
