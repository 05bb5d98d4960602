"""Tune's experiment state kept whole (`ganlab.tunestate`) and the Optuna journal that survives
cut writes and full disks (`ganlab.journal`), without Ray: the files as Tune and Optuna write
them, cut where a kill or a full disk would cut them."""

import errno
import json
import logging
import pickle

import optuna
import pyarrow.fs as pafs
import pytest

from ganlab import journal, rundir, tunestate

STATE = "experiment_state-2026-12-01_10-00-00.json"
SEARCHER = "searcher-state-2026-12-01_10-00-00.pkl"
GEN = "search_gen_state-2026-12-01_10-00-00.json"  # Tune pickles this one despite its name


def staged(directory, step: int) -> dict[str, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        STATE: json.dumps({"trial_data": [], "step": step}).encode(),
        SEARCHER: pickle.dumps({"trials": list(range(step))}),
        GEN: pickle.dumps({"counter": step}),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "trial_x").mkdir(exist_ok=True)  # trial folders are not state
    return files


def test_whole_files_are_told_from_cut_ones():
    for data in (json.dumps({"a": [1, 2]}).encode(), pickle.dumps({"a": list(range(50))})):
        assert tunestate.complete(data)
        assert not any(tunestate.complete(data[:cut]) for cut in range(len(data)))


def test_a_snapshot_keeps_whole_state_and_skips_cut_or_unchanged_state(tmp_path):
    staging, run_dir = tmp_path / "staging", tmp_path / "run"
    first = staged(staging, 1)
    assert tunestate.snapshot(staging, run_dir) and tunestate.good(run_dir) == first
    assert not tunestate.snapshot(staging, run_dir)  # unchanged: no new generation
    (staging / SEARCHER).write_bytes(pickle.dumps({"trials": [0, 1, 2]})[:-5])  # a cut write
    assert not tunestate.snapshot(staging, run_dir) and tunestate.good(run_dir) == first
    for step in (2, 3, 4):
        latest = staged(staging, step)
        assert tunestate.snapshot(staging, run_dir)
    assert tunestate.good(run_dir) == latest
    kept = sorted(p.name for p in (run_dir / rundir.TUNE_STATE).iterdir() if p.is_dir())
    assert kept == ["000003", "000004"]  # the last two generations


def test_a_cut_state_is_put_aside_and_the_good_copy_written(tmp_path):
    staging, run_dir, experiment = tmp_path / "staging", tmp_path / "run", tmp_path / "tune"
    fs = pafs.LocalFileSystem()
    good = staged(staging, 3)
    tunestate.snapshot(staging, run_dir)
    cut = staged(experiment, 4)
    assert tunestate.problems(fs, str(experiment)) == []
    (experiment / STATE).write_bytes(cut[STATE][: len(cut[STATE]) // 2])
    bad = tunestate.problems(fs, str(experiment))
    assert bad == [STATE]
    lines = []
    assert tunestate.repair(fs, str(experiment), run_dir, bad, lines.append)
    assert tunestate.state_files(experiment) == good
    assert (experiment / f".cut-{STATE}").read_bytes() == cut[STATE][: len(cut[STATE]) // 2]
    assert "resuming from the last good copy" in lines[0] and STATE in lines[0]
    assert tunestate.problems(fs, str(experiment)) == []  # whole now


def test_a_cut_state_without_a_good_copy_cannot_be_repaired(tmp_path):
    experiment, fs = tmp_path / "tune", pafs.LocalFileSystem()
    files = staged(experiment, 2)
    (experiment / GEN).write_bytes(files[GEN][:10])
    bad = tunestate.problems(fs, str(experiment))
    assert bad == [GEN]
    assert not tunestate.repair(fs, str(experiment), tmp_path / "run", bad, print)
    assert (experiment / GEN).read_bytes() == files[GEN][:10]  # nothing touched
    error = tunestate.lost(str(experiment), tmp_path / "run", bad)
    assert isinstance(error, tunestate.StateLost) and f"cut ({GEN}" in str(error)
    (experiment / STATE).unlink()
    assert tunestate.problems(fs, str(experiment)) == [GEN, "no experiment_state-*.json"]


def test_a_trial_that_finished_is_found_in_its_result_file(tmp_path):
    fs, experiment = pafs.LocalFileSystem(), tmp_path / "tune"
    (experiment / "trial_a").mkdir(parents=True)
    result = experiment / "trial_a" / rundir.RESULT_FILE
    result.write_text('{"step": 0, "last": false}\n{"step": 20, "la')  # cut mid-line
    assert not tunestate.finished_any(fs, str(experiment))
    result.write_text('{"step": 0, "last": false}\n{"step": 20, "last": true}\n')
    assert tunestate.finished_any(fs, str(experiment))


def test_tunes_failed_restore_is_refused():
    tunestate.check_restored()  # no guard: nothing to refuse
    logger = logging.getLogger(tunestate.RestoreGuard.LOGGER)
    with tunestate.RestoreGuard("runs/x/tune"):
        tunestate.check_restored()
        try:
            raise ValueError("cut file")
        except ValueError:
            logger.exception("Failed to restore the run state.")
        with pytest.raises(tunestate.StateLost, match=r"runs/x/tune: .*ValueError: cut file"):
            tunestate.check_restored()
    tunestate.check_restored()  # the guard ended with its sweep


# --- the journal --------------------------------------------------------------------------------


def _study(path):
    return optuna.create_study(
        study_name="s", storage=journal.journal_storage(path), load_if_exists=True
    )


def test_a_journal_cut_mid_line_opens_and_takes_new_trials(tmp_path):
    path = tmp_path / rundir.JOURNAL
    study = _study(path)
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker_id": "x", "tri')  # a kill mid-append
    study = _study(path)
    after = path.read_bytes()
    assert after.startswith(whole) and b'"worker_id": "x"' not in after  # the cut line is gone
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=2.0))
    assert [t.value for t in _study(path).trials] == [1.0, 2.0]


def test_a_full_disk_pauses_the_journal_and_leaves_no_partial_line(tmp_path, monkeypatch):
    path = tmp_path / rundir.JOURNAL
    study = _study(path)
    real = optuna.storages.journal.JournalFileBackend.append_logs
    failures = []

    def full_then_free(self, logs):
        if len(failures) < 3:  # half a line reaches the disk, then it is full
            with open(self._file_path, "ab") as f:
                f.write(json.dumps(logs[0]).encode()[:7])
            failures.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, logs)

    monkeypatch.setattr(optuna.storages.journal.JournalFileBackend, "append_logs", full_then_free)
    monkeypatch.setattr(journal, "RETRY_FIRST_S", 0.01)
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=3.0))
    assert len(failures) == 3
    assert path.read_bytes().endswith(b"\n")
    assert [t.value for t in _study(path).trials] == [3.0]


def test_other_journal_errors_are_not_retried(tmp_path, monkeypatch):
    def denied(self, logs):
        raise OSError(errno.EACCES, "Permission denied")

    study = _study(tmp_path / rundir.JOURNAL)
    monkeypatch.setattr(optuna.storages.journal.JournalFileBackend, "append_logs", denied)
    with pytest.raises(PermissionError):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=3.0))


def test_a_checkpoint_ray_removed_is_replaced_by_the_trials_newest(tmp_path):
    fs, experiment = pafs.LocalFileSystem(), tmp_path / "tune"
    trial = experiment / rundir.trial_dir_name("t1")
    for number in (8, 9):
        checkpoint = trial / f"checkpoint_{number:06d}"
        checkpoint.mkdir(parents=True)
        (checkpoint / rundir.STATE_FILE).write_bytes(b"state %d" % number)
        (checkpoint / rundir.SAMPLES_FILE).write_bytes(b"samples")
    path = str(trial / "checkpoint_000005")
    metadata = json.dumps({"checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK",
                           "value": pickle.dumps({"latest": path}).hex()}})  # fmt: skip
    state = {"trial_data": [[json.dumps({"trial_id": "t1"}), metadata]]}
    (experiment / STATE).write_text(json.dumps(state))
    lines = []
    tunestate.realign_checkpoints(fs, str(experiment), lines.append)
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000005"]
    assert (trial / "checkpoint_000005" / rundir.STATE_FILE).read_bytes() == b"state 9"
    assert "names checkpoint_000005" in lines[0]
    tunestate.realign_checkpoints(fs, str(experiment), lines.append)  # there now: untouched
    assert len(lines) == 1
