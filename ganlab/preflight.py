"""Everything a sweep needs before it starts, checked without writing anything.

A sweep that cannot run as asked stops here, before Ray starts a trial: another sweep of the
same name running, a storage that cannot be written or that other nodes cannot reach, a run
directory that holds another sweep (or none, for `--resume`), resources this machine lacks, a
protocol that cannot be shipped, a run directory that cannot be trusted (`check_trusted`). Each
raises `SweepError` (exit code 2) naming the sweep file.
"""

import grp
import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import ray

from ganlab import (
    budget,
    plugins,
    protocols,
    rayprivate,
    raystart,
    rundir,
    runlock,
    storage,
    trackers,
)
from ganlab.plugins import HASH_SHOWN
from ganlab.rundir import EXPERIMENT, JOURNAL, RECORD, TUNE_STATE
from ganlab.spec import BadInput, SpecError, SweepSpec


class SweepError(BadInput):
    """A sweep that cannot start as asked (exit code 2 at the command line)."""


def run_dir_of(spec: SweepSpec) -> Path:
    """Where the tables, the journal and the report go: `<storage>/<name>` for local storage,
    `./runs/<name>` (and a copy on the storage) for a URI."""
    if spec.is_remote_storage:
        return Path(rundir.RUNS).resolve() / spec.name
    return Path(spec.storage).expanduser().resolve() / spec.name


def check(spec: SweepSpec, resume: bool, address: str | None) -> Path:
    """Everything a sweep needs before it starts, checked without writing anything; raises
    SweepError naming the sweep file. Returns the run directory."""
    trackers.check_installed(spec)  # a missing package, before anything else is looked at
    run_dir = run_dir_of(spec)
    check_trusted(spec, run_dir, resume)  # first: the others open files in it
    check_not_running(spec, run_dir)
    check_writable(spec, run_dir)
    check_run_dir(spec, resume)
    check_resources(spec, address)
    check_memory(spec, address)
    check_storage(spec, address)
    protocols.keys(spec)  # sample counts: fixed or a choice, and n_eval_rung never searched
    return run_dir


def check_trusted(spec: SweepSpec, run_dir: Path, resume: bool) -> None:
    """A run directory a sweep may write to, and, with `resume`, read Ray's pickles from.

    No symbolic link anywhere in it (the run directory itself may be one: where the user put
    their run): neither ganlab nor Ray makes one there, and a write through one would land on
    whatever it points to (a `.sweep.lock` link made the sweep truncate its target). And for
    `--resume`, which unpickles Ray's state (`tune/*.pkl`, and the trials pickled in
    `tune/*.json`; their copies in `.tune-state/`) and so runs whatever code that holds: the run
    directory, those files, the Optuna journal and `sweep.json` must be owned by this user and
    writable by no one else (a group with no other member, a private group, may write)."""
    if not run_dir.is_dir():
        return
    link = next(_links(run_dir), None)
    if link is not None:
        raise SweepError(
            f"{spec.path}: run directory {run_dir}: {link} is a symbolic link (to "
            f"{os.readlink(link)}); neither ganlab nor Ray makes one there, and the sweep would "
            "write through it onto what it points to. Remove it, or give the sweep another `name`"
        )
    if not resume:
        return
    for path in _resumed_from(run_dir):
        problem = _untrusted(path)
        if problem is not None:
            raise SweepError(
                f"{spec.path}: --resume: {path} {problem}. Resuming unpickles Ray's saved state "
                "from the run directory, which runs any code put there, so ganlab resumes only "
                "a run directory that you own and no one else can write: check what it holds, "
                "then `chmod go-w` (or `chown`) it, or start the sweep afresh under another "
                "`name`"
            )


def _links(root: Path):
    """Every symbolic link under `root` (not following any)."""
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory) / name
            if path.is_symlink():
                yield path


def _resumed_from(run_dir: Path) -> list[Path]:
    """What `--resume` reads code or state from: the run directory, Ray's experiment directory
    and its state files, the good copies of them, the journal and the record."""
    paths = [run_dir, run_dir / RECORD, run_dir / JOURNAL]
    experiment = run_dir / EXPERIMENT
    states = sorted(p for p in experiment.glob("*") if p.suffix in (".pkl", ".json"))
    paths += [experiment, *states]
    copies = run_dir / TUNE_STATE
    paths += [copies, *sorted(copies.rglob("*"))]
    return [path for path in paths if os.path.lexists(path)]


def _untrusted(path: Path) -> str | None:
    """Why another user could change `path`, or None."""
    found = path.lstat()
    if found.st_uid != os.geteuid():
        return f"is owned by {_user(found.st_uid)}, not by you ({_user(os.geteuid())})"
    if found.st_mode & stat.S_IWOTH:
        return f"is writable by every user (mode {stat.filemode(found.st_mode)})"
    if found.st_mode & stat.S_IWGRP and not _private_group(found.st_gid):
        return (f"is writable by its group {_group(found.st_gid)}, which is not yours alone "
                f"(mode {stat.filemode(found.st_mode)})")  # fmt: skip
    return None


def _private_group(gid: int) -> bool:
    """Whether no user but this one belongs to group `gid` (a user private group, which a
    umask of 002 makes group-writable files in)."""
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:  # a user or group without a name: nothing says who else is in it
        return False
    primary = {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}
    return members | primary <= {me}


def _known_user(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _user(uid: int) -> str:
    return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})" if _known_user(uid) else f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return repr(grp.getgrgid(gid).gr_name)
    except KeyError:
        return f"gid {gid}"


def check_not_running(spec: SweepSpec, run_dir: Path) -> None:
    holder = runlock.holder(run_dir)
    if holder is not None:
        raise running_error(spec, run_dir, holder)


def running_error(spec: SweepSpec, run_dir: Path, holder: str) -> SweepError:
    return SweepError(
        f"{spec.path}: another sweep named {spec.name!r} is running in {run_dir} ({holder}); "
        "wait for it to end, or give this one another `name`"
    )


def check_writable(spec: SweepSpec, run_dir: Path) -> None:
    """The run directory (and a `file://` storage) must be a directory this process can write."""
    places = [run_dir]
    if spec.storage.startswith("file://"):
        places.append(Path(spec.storage_uri.removeprefix("file://")))
    for place in places:
        existing = place
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise SweepError(f"{spec.path}: storage: {existing} is a file, not a directory; "
                             "set `storage:` (or --storage) to a directory")  # fmt: skip
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SweepError(f"{spec.path}: storage: cannot write in {existing} (no permission, "
                             "or a read-only file system); set `storage:` (or --storage) to a "
                             "directory you can write")  # fmt: skip


def check_run_dir(spec: SweepSpec, resume: bool) -> Path:
    """Refuse to overwrite a previous sweep, to resume one that is not there, and to resume one
    as another sweep than it was started as."""
    run_dir = run_dir_of(spec)
    exists = (run_dir / EXPERIMENT).exists() or (run_dir / JOURNAL).exists()
    if spec.is_remote_storage:
        exists = exists or storage.exists(f"{spec.storage_uri}/{EXPERIMENT}")
    if exists and not resume:
        raise SweepError(f"{spec.path}: {spec.storage_uri} holds a sweep already: add --resume "
                         "to continue it, or give the sweep another `name`")  # fmt: skip
    if resume and not exists:
        raise SweepError(f"{spec.path}: --resume: no sweep to resume in {spec.storage_uri}")
    if resume:
        _check_same_sweep(spec, run_dir)
    return run_dir


def _check_same_sweep(spec: SweepSpec, run_dir: Path) -> None:
    recorded = _read_record(spec, run_dir)
    if recorded is None:  # started before sweeps kept a record
        return
    now = spec.record()
    changed = [key for key in now if recorded.get(key, _NO_PLUGINS.get(key)) != now[key]]
    if not changed:
        return
    if changed == ["plugins"]:
        raise SweepError(f"{spec.path}: imports: --resume runs the code the sweep was started "
                         f"with, but {_plugin_changes(recorded['plugins'], now['plugins'])}. "
                         "Put the code back as it was, start a new sweep under another `name`, "
                         "or add --allow-changed-plugins to go on with the new code (its rows "
                         "say which code made them, in `plugins`)")  # fmt: skip
    details = "; ".join(
        f"{key} was {_short(recorded.get(key))}, now {_short(now[key])}" for key in changed
    )
    raise SweepError(
        f"{spec.path}: --resume continues the sweep as it was started, and Ray and Optuna would "
        f"ignore a change, but {', '.join(changed)} changed ({details}). Put the file back as it "
        "was, or start a new sweep under another `name`."
    )


_NO_PLUGINS = {"plugins": []}  # a record written before plugins existed


def _plugin_changes(was: list[dict], now: list[dict]) -> str:
    before = {p["module"]: p["sha256"][:HASH_SHOWN] for p in was}
    after = {p["module"]: p["sha256"][:HASH_SHOWN] for p in now}
    modules = [m for m in dict.fromkeys([*before, *after]) if before.get(m) != after.get(m)]
    return "; ".join(f"{m} was {before.get(m, 'not imported')}, now "
                     f"{after.get(m, 'not imported')}" for m in modules)  # fmt: skip


def accept_changed_plugins(spec: SweepSpec) -> None:
    """`--resume --allow-changed-plugins`: record the plugins' code as it is now, so the resumed
    sweep runs it (the rows made before keep the hashes of theirs)."""
    run_dir = run_dir_of(spec)
    recorded = _read_record(spec, run_dir)
    if recorded is None:
        return
    recorded["plugins"] = spec.record()["plugins"]
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(run_dir / RECORD, json.dumps(recorded, indent=1) + "\n")
    if spec.is_remote_storage:
        storage.push(run_dir, spec.storage_uri, [RECORD])


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_record(spec: SweepSpec, run_dir: Path) -> dict | None:
    path = run_dir / RECORD
    if path.exists():
        return json.loads(path.read_text())
    if spec.is_remote_storage:
        text = storage.read_text(f"{spec.storage_uri}/{RECORD}")
        return None if text is None else json.loads(text)
    return None


def write_record(spec: SweepSpec, run_dir: Path) -> None:
    rundir.atomic_write_text(run_dir / RECORD, json.dumps(spec.record(), indent=1) + "\n")


def check_memory(spec: SweepSpec, address: str | None) -> None:
    """The largest trial the search can make must fit the memory it would get (`budget`)."""
    problem = budget.check_sweep(spec, address)
    if problem is not None:
        raise SpecError(spec.path, budget.location(spec, problem.field), problem.message)


def check_resources(spec: SweepSpec, address: str | None) -> None:
    """On a private local Ray, a trial asking for more than this machine has would wait forever."""
    if address is not None:
        return  # a cluster may grow (the autoscaler adds nodes for waiting trials)
    # Ray's own detection, which `ray.init` uses (CPU quotas of containers included).
    have = {"cpu": rayprivate.machine_cpus(), "gpu": rayprivate.machine_gpus()}
    for key, count in have.items():
        need = getattr(spec.resources, key)
        if need > count:
            raise SweepError(
                f"{spec.path}: resources.{key}: a trial asks for {need:g} {key.upper()}, but this "
                f"machine has {count:g}, so on a local Ray it would wait forever; ask for at most "
                f"{count:g}, or join a cluster that has them with --address"
            )


NETWORK_FILE_SYSTEMS = (
    "nfs", "nfs4", "cifs", "smb3", "ceph", "lustre", "glusterfs", "beegfs", "gpfs", "efs", "9p",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs",
)  # fmt: skip


def check_storage(spec: SweepSpec, address: str | None) -> None:
    """Trials on other machines must write to storage every node can reach.

    A local path is fine while every node is this machine and this machine can run a trial;
    otherwise (several machines, or a head that runs no trials and waits for autoscaled
    workers) it must be a cloud URI or a network file system.
    """
    if address is None or spec.is_remote_storage:
        return
    # The sweep goes on in this connection: it ships the plugins' code to every worker.
    raystart.start(address, plugins.runtime_env(spec.plugins))
    here = ray.get_runtime_context().get_node_id()
    nodes = [node for node in ray.nodes() if node["Alive"]]
    this_node = next(node for node in nodes if node["NodeID"] == here)
    hosts = {node["NodeManagerAddress"] for node in nodes}
    elsewhere = hosts - {this_node["NodeManagerAddress"]}
    can_run_here = all(
        this_node["Resources"].get(key, 0.0) >= need
        for key, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu))
    )
    if (elsewhere or not can_run_here) and not _on_network_file_system(run_dir_of(spec)):
        ray.shutdown()
        where = (
            f"the cluster spans {len(hosts)} machines ({', '.join(sorted(hosts))})"
            if elsewhere
            else "this node cannot run a trial, so trials will run on other machines"
        )
        raise SweepError(
            f"{spec.path}: storage {spec.storage!r} is a local path, but {where}: their trials "
            "could not write there. Set `storage:` in the sweep file (or --storage) to a cloud "
            "URI such as s3://my-bucket/ganlab-runs, or to a shared file system (NFS, EFS) "
            "mounted at the same path on every node."
        )


def _on_network_file_system(path: Path) -> bool:
    """Whether `path` lies on a mount of a network file system (per /proc/mounts)."""
    best, fstype = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    for line in mounts:
        _, mount_point, kind = line.split()[:3]
        inside = str(path).startswith(mount_point.rstrip("/") + "/") or mount_point == "/"
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, kind
    return fstype in NETWORK_FILE_SYSTEMS
