"""Machines for Ray's cluster launcher on one host: an OpenSSH server per loopback address.

Each "machine" is an `sshd` of its own (Debian's, installed by scripts/install-sshd.sh) on one
loopback address and a port picked free, with its own config, host key and HOME, that lets in
only this host's user with a key made for the test (no password, no other key). The system's
sshd, if any, is never touched. Ray's SSH options have no port, and the head's autoscaler gets
no `ssh_proxy_command`, so `ssh_wrapper` makes an `ssh` that adds `-p PORT`, put first on PATH
where `ray up` runs and in each machine's shell (what a `Port` line in ~/.ssh/config does for a
real cluster on another port). Each machine's shell also gets a `ray` function whose `ray stop`
ends only that node's Ray (a real `ray stop` ends every Ray of this host).
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from raycluster import process_table, stop

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT_S = 20
TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Machine:
    address: str
    home: Path  # HOME of the sessions sshd starts
    ray_temp_dir: Path  # the temp dir of this machine's Ray node
    process: subprocess.Popen


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ganlab-rehearsal",
                    "-f", str(path)], check=True)  # fmt: skip
    return path


def ssh_wrapper(bin_dir: Path, port: int) -> Path:
    """`bin_dir/ssh`: this host's ssh, to `port`. A key `-i ~/...` (Ray's `-i
    ~/ray_bootstrap_key.pem` on the head) is made `-i $HOME/...`: ssh itself expands `~` to the
    account's home, which is not the HOME these machines' sessions have."""
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        'key=; for arg in "$@"; do '
        'if [ "$key" = -i ]; then case $arg in "~/"*) arg="$HOME/${arg#"~/"}";; esac; fi; '
        'key=$arg; set -- "$@" "$arg"; shift; done\n'
        f'exec {shutil.which("ssh")} -p {port} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def _bashrc(ray_temp_dir: Path, bin_dir: Path) -> str:
    """The test's ssh and this Python's commands first on PATH (the nodes' `pip install` is
    already done here), and a `ray stop` scoped to this machine's Ray node."""
    stop_node = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from pathlib import Path; "
                 f"from raycluster import stop; stop(Path({str(ray_temp_dir)!r}))")  # fmt: skip
    return (
        f"export PATH={bin_dir}:{Path(sys.executable).parent}:$PATH\n"
        f'ray() {{ if [ "$1" = stop ]; then {sys.executable} -c "{stop_node}"; '
        'else command ray "$@"; fi; }\n'
    )


def start(root: Path, name: str, address: str, port: int, authorized: Path) -> Machine:
    """An sshd on `address:port` whose sessions have HOME `root/home-<name>`, and `ssh` to
    `port` first on their PATH (`root/bin`)."""
    home, ray_temp_dir = root / f"home-{name}", root / f"ray-{name}"
    home.mkdir()
    ssh_wrapper(root / "bin", port)
    (home / ".bashrc").write_text(_bashrc(ray_temp_dir, root / "bin"))
    host_key = keygen(root / f"host-key-{name}")
    config = root / f"sshd-{name}.conf"
    config.write_text(
        f"ListenAddress {address}:{port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / f'sshd-{name}.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "AuthenticationMethods publickey\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        f"AllowUsers {user()}\n"
        "UsePAM no\nStrictModes no\nPrintMotd no\nX11Forwarding no\n"
        f"SetEnv HOME={home}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = (root / f"sshd-{name}.log").open("wb")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"sshd on {address}:{port} did not start: "
                               f"{(root / f'sshd-{name}.log').read_text()}")  # fmt: skip
        time.sleep(0.1)
    return Machine(address, home, ray_temp_dir, process)


def user() -> str:
    """This process's user: the one the sshds let in."""
    return pwd.getpwuid(os.getuid()).pw_name


def end(machine: Machine) -> None:
    """End the machine's sshd (and its sessions: they are its children) and its Ray node."""
    stop(machine.ray_temp_dir)
    pids = {machine.process.pid}
    table = process_table()
    while children := {p for p, (parent, _) in table.items() if parent in pids} - pids:
        pids |= children
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            machine.process.wait(timeout=5)
            break
    machine.process.wait(timeout=5)


def end_all(root: Path) -> None:
    """End every process naming `root` in its command line (sshds, Ray, SSH masters) and their
    children: what is left of a rehearsal that failed half way."""
    table = process_table()
    mine, pid = set(), os.getpid()
    while pid in table and pid not in mine:
        mine.add(pid)
        pid = table[pid][0]
    pids = {p for p, (_, command) in table.items() if str(root) in command} - mine
    while children := {p for p, (parent, _) in table.items() if parent in pids} - pids - mine:
        pids |= children
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
