#!/bin/sh
# Everything the tests need on a fresh machine (Python 3.11 and pip), then the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k trial`.
set -eu
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e ".[test,cluster]"  # cluster: the cluster-file tests read Ray's AWS code, which imports boto3
sh scripts/install-browser.sh
sh scripts/install-sshd.sh  # the `ray up` rehearsal's sshd and rsync (tests/test_ray_up.py)
python3 -m pytest "$@"
