"""A sweep that no kill or full disk corrupts: real sweeps on local Ray killed at the write sites
(an Optuna journal append, Tune's copy of its experiment state, a table file's rename) and at a
random time, or run on a real tmpfs that fills up and frees again; resumed each time and checked
(tests/faults.py). benchmarks/fault_campaign.py runs the long campaign."""

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from faults import CAMPAIGN_SWEEP, _check_end, campaign, kill_marked

from ganlab import rundir


def test_kills_at_every_write_site_lose_and_double_no_row(tmp_path):
    counts = campaign(tmp_path, ["journal:5", "state:3", "table:6"], steps=120)
    assert counts["kills"] == 3, counts
    assert counts["rows_lost"] == counts["rows_doubled"] == counts["rows_changed"] == 0, counts
    assert counts["refused"] == 0 and counts["resumes_exact"] == counts["resumes"], counts
    assert counts["finished"] == 4


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs: a real disk that fills up (the tests run as root, as CI does)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    assert mounted.returncode == 0, f"mounting a tmpfs needs root: {mounted.stderr}"
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Fill `disk` to the last block with one ballast file (unbuffered writes, smaller and
    smaller blocks as space runs out)."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return ballast


def test_a_disk_that_fills_and_frees_pauses_the_sweep_and_resume_finishes_it(small_disk, tmp_path):
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN_SWEEP.format(steps=160))
    runs = small_disk / "runs"
    env = {**os.environ, "GANLAB_CAMPAIGN": tmp_path.name}
    command = [sys.executable, "-m", "ganlab.cli", "sweep", str(path), "--storage", str(runs),
               "--no-report"]  # fmt: skip
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(driver.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        result_files = runs / "campaign" / rundir.EXPERIMENT
        while not list(result_files.glob(f"*/{rundir.RESULT_FILE}")):
            assert time.monotonic() < deadline and driver.poll() is None, "".join(output)
            time.sleep(0.2)
        ballast = _fill(small_disk)  # every write of the sweep now fails for lack of space
        time.sleep(8)
        ballast.unlink()
        first = driver.wait(timeout=600)
    finally:
        driver.kill()
        kill_marked(f"GANLAB_CAMPAIGN={tmp_path.name}")
    reader.join(timeout=5)
    text = "".join(output)
    assert first == 0, text[-4000:]  # the driver lived through the full disk
    assert "No space left on device" in text  # and said what happened
    for _ in range(2):  # trials that failed for good while the disk was full resume
        resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True,
                                 text=True, timeout=600)  # fmt: skip
        kill_marked(f"GANLAB_CAMPAIGN={tmp_path.name}")
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        try:
            assert _check_end(runs / "campaign") == 4
            break
        except AssertionError:
            continue
    assert _check_end(runs / "campaign") == 4
