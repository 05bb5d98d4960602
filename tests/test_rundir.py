"""The run directory's layout, spelled once, and the one atomic write."""

import ast
import os
import re
import stat
from pathlib import Path

import pytest

from ganlab import rundir

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("ganlab", "analysis")  # where no name of the layout may be spelled twice


def test_the_layout_is_the_documented_one():
    # The on-disk format users, notebooks and older run directories rely on, spelled out on
    # purpose: changing a name here is a format change (docs/DESIGN.md, README).
    assert (rundir.RECORD, rundir.LOCK_FILE, rundir.JOURNAL) == (
        "sweep.json", ".sweep.lock", "optuna-journal.log")  # fmt: skip
    assert rundir.TABLES == ("trials.parquet", "metrics.parquet", "samples.parquet")
    assert (rundir.REPORT, rundir.COMPARISON, rundir.EXPERIMENT) == (
        "report.html", "compare.html", "tune")  # fmt: skip
    assert rundir.part_file(rundir.segment_key(1)) == "segment-000001.parquet"
    assert rundir.real_samples_key("ring8", "~/data") == "real-ring8-42dd2729"
    assert rundir.trial_dir_name("a1b2_00003") == "trial_a1b2_00003"
    assert rundir.trial_id_of("trial_a1b2_00003") == "a1b2_00003"
    assert (rundir.PARAMS_FILE, rundir.RESULT_FILE, rundir.ERROR_FILE) == (
        "params.json", "result.json", "error.txt")  # fmt: skip
    assert (rundir.STATE_FILE, rundir.SAMPLES_FILE) == ("state.pt", "samples.pt")
    assert (rundir.CONFIRM, rundir.CONFIRM_PLAN) == ("confirmation", "plan.json")
    assert rundir.checkpoint_number("checkpoint_000012") == 12
    assert rundir.checkpoint_number("checkpoint_tmp1a2b") is None
    assert rundir.checkpoint_number(".checkpoint_000012") is None


# --- the atomic write -------------------------------------------------------------------------


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "table.parquet"
    path.write_text("old")
    seen = []

    def half_then_fail(tmp: Path) -> None:
        assert tmp.parent == path.parent  # the rename never crosses file systems
        tmp.write_text("half a n")
        seen.append(path.read_text())  # a reader meanwhile: the old file, whole
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        rundir.atomic_write(path, half_then_fail)
    assert seen == ["old"] and path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_an_interrupt_leaves_no_new_file_and_no_temporary_one(tmp_path):
    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rundir.atomic_write(tmp_path / "report.html", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_text_and_bytes_replace_the_file_and_create_its_directory(tmp_path):
    path = tmp_path / "new" / "deeper" / "sweep.json"
    rundir.atomic_write_text(path, "{}\n")
    rundir.atomic_write_text(path, '{"name": "é"}\n')
    assert path.read_bytes() == '{"name": "é"}\n'.encode()
    rundir.atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["sweep.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_files_are_created_like_any_other_file(tmp_path, umask):
    # 0o666 less the umask, as `open(path, "w")` makes them: tables and reports readable by the
    # group under the usual umask (never mkstemp's 0600), and no more than the umask allows.
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain"
        plain.write_text("")
        new, replaced = tmp_path / "new", tmp_path / "replaced"
        replaced.write_text("")
        replaced.chmod(0o600)
        for path in (new, replaced):
            rundir.atomic_write_text(path, "x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (plain, new, replaced)}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


# --- one spelling of every name -----------------------------------------------------------------


def _layout_names() -> dict[str, str]:
    """Every name of the layout (constant name: its text); a pattern by its literal prefix."""
    names = {}
    for attribute, value in vars(rundir).items():
        if not attribute.isupper():
            continue
        if isinstance(value, str):
            names[attribute] = value
        elif isinstance(value, re.Pattern):
            names[attribute] = re.match(r"\^?([\w.-]+)", value.pattern)[1]
    return names


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """The string constants of a module (and the literal pieces of its f-strings), but not its
    docstrings, which may name files in prose."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def _spells(text: str, name: str) -> bool:
    """Whether a string spells `name`: a file name (with a dot) anywhere in it; a word ("tune")
    as the whole string or a directory in a path; a prefix ("trial_", "real-") at a path
    component's start, followed by nothing (an f-string goes on) or a pattern (`(`, `[`, `*`),
    so "trial_id" does not count."""
    if "." in name:
        return name in text
    if name.endswith(("_", "-")):
        return re.search(rf"(?:^|[/^]){re.escape(name)}(?:$|[(\[*{{])", text) is not None
    return text == name or re.search(rf"(?:^|/){re.escape(name)}/", text) is not None


def test_every_name_of_the_layout_is_spelled_only_in_rundir():
    names = _layout_names()
    assert {"JOURNAL", "TRIALS", "CHECKPOINT_DIR", "TRIAL_DIR_PREFIX", "EXPERIMENT"} <= set(names)
    home = ROOT / "ganlab" / "rundir.py"
    found = []
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            if path == home:
                continue
            for line, text in _strings(ast.parse(path.read_text(), str(path))):
                found += [
                    f"{path.relative_to(ROOT)}:{line}: {text!r} spells rundir.{constant}"
                    for constant, name in names.items()
                    if _spells(text, name)
                ]
    assert found == []


def test_the_check_finds_a_second_spelling():
    tree = ast.parse(
        '"""Reads trials.parquet."""\n'
        'JOURNAL = "optuna-journal.log"\n'
        'path = f"{run}/tune/trial_{trial_id}/result.json"\n'
        'pattern = r"^checkpoint_(\\d+)$"\n'
        'segments = directory.glob("segment-*")\n'
        'columns = ["trial_id", "real-data floor", "tuned", "runs of a sweep", "s3://b/runs"]\n'
    )
    names = _layout_names()
    spelled = {c for _, text in _strings(tree) for c, name in names.items() if _spells(text, name)}
    assert spelled == {
        "JOURNAL", "EXPERIMENT", "TRIAL_DIR_PREFIX", "RESULT_FILE", "CHECKPOINT_DIR", "SEGMENT",
    }  # fmt: skip


def _renames(tree: ast.AST) -> list[int]:
    """Lines that rename a file or make a temporary one: `os.replace`, `os.rename`, `x.rename(y)`,
    `path.replace(target)` (one argument: not `str.replace`, not `dataclasses.replace(x, **k)`),
    `tempfile.mkstemp` and `NamedTemporaryFile`."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        one_argument = len(node.args) == 1 and not node.keywords
        if name in ("rename", "mkstemp", "NamedTemporaryFile") or (
            name == "replace" and (one_argument or ast.unparse(node.func) == "os.replace")
        ):
            lines.append(node.lineno)
    return lines


def test_files_are_renamed_into_place_only_by_the_atomic_write():
    found = [
        str(path.relative_to(ROOT))
        for source in SOURCES
        for path in sorted((ROOT / source).rglob("*.py"))
        for _ in _renames(ast.parse(path.read_text(), str(path)))
    ]
    assert found == ["ganlab/rundir.py"]  # its one `os.replace`
