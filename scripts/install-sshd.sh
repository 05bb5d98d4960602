#!/bin/sh
# Install Debian's OpenSSH server for the cluster-launcher rehearsal (tests/test_ray_up.py), which
# starts a private sshd of its own on loopback (its own port, config and keys; never the system's
# service). Idempotent: does nothing when /usr/sbin/sshd is already there.
set -eu

if [ -x /usr/sbin/sshd ] && [ -x /usr/bin/rsync ]; then
    echo "sshd already installed: $(/usr/sbin/sshd -V 2>&1 | head -n 1 || echo /usr/sbin/sshd)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-sshd.sh: /usr/sbin/sshd is missing and installing it needs root;" >&2
    echo "  run: sudo $0   (or: apt-get install -y --no-install-recommends openssh-server rsync)" >&2
    exit 1
fi

# The package's post-install starts the system service where an init system runs; the test
# never uses that one. rsync: `ray up` copies file_mounts with it.
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends openssh-server openssh-client rsync
/usr/sbin/sshd -V 2>&1 | head -n 1 || true
