"""A sweep on `s3://` storage against a real S3 endpoint on loopback: moto's server, started here.

The sweep runs from one working directory, as `ganlab sweep` does (its own local Ray), with the
endpoint and credentials in the environment only (`AWS_ENDPOINT_URL`, read by pyarrow and so by
Ray Tune and ganlab alike). Then that directory is removed, as on another machine, and the sweep
is resumed from a second one: it finds the run in the bucket and continues its Optuna study in
a journal of its own (not at the path pickled where it started). `ganlab results` and `report`
read the run from its URI. A second driver on the same URI is refused while the first holds it.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import faults
import optuna
import pandas as pd
import pyarrow.fs as pafs
import pytest
from faults import FAULT_ENV
from raycluster import free_ports

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
BUCKET = "ganlab-test"
STORAGE = f"s3://{BUCKET}/runs"
RUN = f"{STORAGE}/quickstart-smoke"
SWEEP_TIMEOUT_S = 300
START_TIMEOUT_S = 30
KILL_AT = "journal:10"  # after both trials were suggested, before either finished


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, a bucket in it; the environment to reach it."""
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "ganlab-test",
               "AWS_SECRET_ACCESS_KEY": "ganlab-test", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1"}  # fmt: skip
        fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="ganlab-test",
                               secret_key="ganlab-test", region="us-east-1",
                               allow_bucket_creation=True)  # fmt: skip
        fs.create_dir(BUCKET)
        yield env, fs
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def ganlab(args: list[str], cwd: Path, env: dict[str, str], timeout: float = SWEEP_TIMEOUT_S,
           faulted: bool = False):  # fmt: skip
    """The `ganlab` command line in a fresh process, in `cwd`, reaching S3 through `env` (with
    tests/faults.py's fault of `$GANLAB_FAULT` armed, if `faulted`)."""
    paths = [env.get("PYTHONPATH", ""), str(ROOT), os.environ.get("PYTHONPATH", "")]
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    full.update(env, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    entry = ["-c", "import faults; faults.main()"] if faulted else ["-m", "ganlab.cli"]
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def objects(fs: pafs.S3FileSystem, prefix: str) -> set[str]:
    found = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    return {i.path.removeprefix(prefix + "/") for i in found if i.type == pafs.FileType.File}


def read_table(fs: pafs.S3FileSystem, name: str) -> pd.DataFrame:
    return pd.read_parquet(f"{BUCKET}/runs/quickstart-smoke/{name}", filesystem=fs)


def journal_trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name="quickstart-smoke", storage=storage).get_trials()


@pytest.fixture(scope="module")
def killed_run(s3, tmp_path_factory):
    """The smoke sweep from a first working directory, its driver killed mid-sweep (at its
    KILL_AT-th Optuna journal append, tests/faults.py), then that directory removed: "another
    machine" from here on. Returns what its journal held."""
    env, _ = s3
    here = tmp_path_factory.mktemp("machine-a")
    marker = f"GANLAB_S3_RUN={here.name}"  # in the environment of every Ray process it started
    tests = str(Path(__file__).parent)
    try:
        done = ganlab(["sweep", str(QUICKSTART), "--smoke", "--storage", STORAGE], here,
                      {**env, FAULT_ENV: KILL_AT, "GANLAB_S3_RUN": here.name,
                       "PYTHONPATH": tests}, faulted=True)  # fmt: skip
    finally:
        faults.kill_marked(marker)  # the killed driver's Ray
    assert done.returncode == -9, done.stdout[-3000:] + done.stderr[-3000:]
    journal = journal_trials(here / "runs" / "quickstart-smoke" / "optuna-journal.log")
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in journal)  # cut mid-sweep
    shutil.rmtree(here)
    return here, journal


@pytest.fixture(scope="module")
def first_run(s3, killed_run, tmp_path_factory):
    """The killed sweep resumed from a second working directory, to its end."""
    env, _ = s3
    here = tmp_path_factory.mktemp("machine-b")
    done = ganlab(["sweep", str(QUICKSTART), "--smoke", "--storage", STORAGE, "--resume"],
                  here, env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    local = here / "runs" / "quickstart-smoke"
    tables = {name: pd.read_parquet(local / name) for name in ("trials.parquet",
                                                                 "metrics.parquet")}  # fmt: skip
    return done, tables, local


def test_the_sweep_writes_everything_to_the_bucket(s3, first_run):
    _, fs = s3
    done, tables, _ = first_run
    assert f"tables and report copied to {RUN}" in done.stdout
    stored = objects(fs, f"{BUCKET}/runs/quickstart-smoke")
    for name in ("sweep.json", "optuna-journal.log", "report.html"):
        assert name in stored
    assert any(n.startswith("trials.parquet/") and n.endswith(".parquet") for n in stored)
    assert any(n.startswith("metrics.parquet/") and n.endswith(".parquet") for n in stored)
    assert any(n.startswith("tune/experiment_state-") for n in stored)  # Ray's own state
    trial_dirs = {n.split("/")[1] for n in stored if n.startswith("tune/trial_")}
    assert len(trial_dirs) == 2  # --smoke: two configurations
    assert ".sweep.lease" not in stored  # released at the end
    # Every table row, read back from the bucket, is the row the driver wrote.
    for name, local in tables.items():
        remote = read_table(fs, name)
        key = ["trial_id", "seed"] + (["step"] if name == "metrics.parquet" else [])
        pd.testing.assert_frame_equal(
            remote.sort_values(key).reset_index(drop=True)[sorted(local.columns)],
            local.sort_values(key).reset_index(drop=True)[sorted(local.columns)],
        )
    assert len(tables["trials.parquet"]) == 2 * 2  # two configurations × two seeds


def test_resume_elsewhere_finds_the_run_and_continues_the_study(s3, killed_run, first_run):
    _, fs = s3
    machine_a, before = killed_run
    done, _, local = first_run
    # The study went on in this directory's journal (pulled from the bucket), not at the path
    # the searcher had pickled on machine A, which no longer exists.
    assert not machine_a.exists()
    after = {t.number: t for t in journal_trials(local / "optuna-journal.log")}
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for trial in before:  # every trial of machine A's journal, carried on here
        assert after[trial.number].params.items() >= trial.params.items()
        if trial.state in finished:
            assert after[trial.number].state == trial.state
        else:  # resumed to its end, or an orphan suggestion closed as FAIL (JournalSearch)
            assert after[trial.number].state in (*finished, optuna.trial.TrialState.FAIL)
    assert sum(t.state in finished for t in after.values()) == 2  # both configurations
    assert len(after) > len(before) or any(
        after[t.number].state != t.state for t in before
    )  # written to after the resume: the study went on in this journal
    with fs.open_input_stream(f"{BUCKET}/runs/quickstart-smoke/optuna-journal.log") as stored:
        assert stored.read() == (local / "optuna-journal.log").read_bytes()
    assert "best configurations (good_modes, max; median over seeds" in done.stdout


def test_results_and_report_read_the_run_from_its_uri(s3, first_run, tmp_path):
    env, _ = s3
    _, tables, _ = first_run
    shown = ganlab(["results", RUN, "--seeds", "--columns", "trial_id,seed,status"], tmp_path,
                   env, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    for row in tables["trials.parquet"].itertuples():
        assert row.trial_id in shown.stdout
    written = ganlab(["report", RUN], tmp_path, env, timeout=300)
    assert written.returncode == 0, written.stderr[-3000:]
    report = Path(written.stdout.strip().splitlines()[-1])
    assert report.name == "report.html" and report.stat().st_size > 10_000
    missing = ganlab(["results", f"{STORAGE}/no-such-run"], tmp_path, env, timeout=120)
    assert missing.returncode == 2
    assert f"{STORAGE}/no-such-run: no run there" in missing.stderr


def test_a_second_driver_on_the_same_uri_is_refused(s3, first_run, tmp_path):
    env, fs = s3
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ganlab import storage\n"
         f"with storage.writer_lease({RUN!r}):\n    print('held', flush=True)\n"
         "    time.sleep(120)"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        lease = json.loads(fs.open_input_stream(f"{BUCKET}/runs/quickstart-smoke/.sweep.lease")
                           .read())  # fmt: skip
        assert lease["pid"] == holder.pid
        refused = ganlab(["sweep", str(QUICKSTART), "--smoke", "--storage", STORAGE, "--resume"],
                         tmp_path, env, timeout=120)  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert (f"another sweep named 'quickstart-smoke' is running in {RUN} (pid {holder.pid} on "
                f"{socket.gethostname()}, lease renewed ") in refused.stderr  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    # A lease whose process is gone (killed, on this machine) holds nothing.
    assert json.loads(fs.open_input_stream(f"{BUCKET}/runs/quickstart-smoke/.sweep.lease")
                      .read())["pid"] == holder.pid  # fmt: skip
    from ganlab import storage

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with storage.writer_lease(RUN) as mine:
            assert json.loads(storage.read_text(mine.uri))["pid"] == os.getpid()
        assert storage.read_text(mine.uri) is None
