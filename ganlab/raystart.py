"""Starting Ray for a sweep, a private local cluster on loopback or a running one joined, and
stopping it again.

Ray leaves a session directory (its logs, sockets and Tune's staging files, some hundreds of kB
to many MB) in its temp directory (`/tmp/ray`) for every cluster it starts, and never removes
one. `stop` removes the one of a private cluster this process started, once Ray is shut down:
its logs served that sweep only. A cluster joined with `--address` keeps its own.
"""

import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray

from ganlab import rayprivate

REMOVE_ATTEMPTS = 5  # Ray's processes may still write a last log line while they exit
REMOVE_PAUSE_S = 0.2
_session: Path | None = None  # the session directory of the private cluster started here


def start(address: str | None, runtime_env: dict[str, Any] | None = None) -> bool:
    """Start (or join) Ray, every worker with `runtime_env` (the plugins' code); True when this
    call started it, so it is ours to shut down."""
    global _session
    if ray.is_initialized():
        return False
    # Checkpointing every evaluation is the design; Ray's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address is None:  # a private local cluster on loopback, no dashboard, token auth on
        use_loopback()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env=runtime_env)  # fmt: skip
        _session = rayprivate.own_session_dir()  # None if ray.init joined a cluster after all
    else:  # joining a cluster: authenticate with this machine's token where there is one
        if os.environ.get("RAY_AUTH_TOKEN") or Path("~/.ray/auth_token").expanduser().exists():
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env=runtime_env)  # fmt: skip
    return True


def stop(started: bool, keep_logs: bool = False) -> Path | None:
    """Shut Ray down if this process `started` it (what `start` returned), and remove the
    session directory of the private cluster it started, if it did, unless `keep_logs` (a
    sweep that failed: its workers' output is there). Returns the directory kept, if any."""
    global _session
    if not started:
        return None
    session, _session = _session, None
    ray.shutdown()
    if session is None or keep_logs:
        return session
    remove_session(session)
    return None


def remove_session(session: Path) -> None:
    """Remove a session directory of Ray's, and the `session_latest` link if it points there."""
    for _ in range(REMOVE_ATTEMPTS):
        shutil.rmtree(session, ignore_errors=True)
        if not session.exists():
            break
        time.sleep(REMOVE_PAUSE_S)
    latest = session.parent / "session_latest"
    if latest.is_symlink() and Path(os.readlink(latest)) == session:
        latest.unlink(missing_ok=True)


def use_loopback() -> None:
    """Make a private cluster's node address 127.0.0.1, so its servers listen on loopback.

    On Linux, Ray turns a loopback `_node_ip_address` into the machine's routable address;
    only its single-machine mode (the default on macOS and Windows) keeps 127.0.0.1. The
    variable carries the mode to the processes Ray starts.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    rayprivate.keep_loopback_address()
