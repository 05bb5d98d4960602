"""A table kept as a directory of parquet files, so that rewriting a few rows costs a few rows.

`<table>/<key>.parquet` is a part: the rows of one key (a trial), rewritten whole when they
change. Parts that will not change again are merged now and then into
`<table>/segment-<n>.parquet`, so that a table of thousands of trials stays a few dozen files.
A reader takes each key's rows from one file only: its part where there is one, else the newest
segment holding it; if a part is merged away while it reads, it reads again. Every file is
written with `rundir.atomic_write` (a temporary file and a rename; created like any other file,
so readable by the group), never half visible. pandas and pyarrow read such a directory as one
table too, though while parts are being merged they may see a key's rows twice. The file names
are `ganlab.rundir`'s.
"""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ganlab.rundir import PART_SUFFIX, SEGMENT, atomic_write, part_file, segment_key

KEY = "trial_id"
READ_ATTEMPTS = 5
T = TypeVar("T")


def write(path: Path, table: pa.Table, schema: pa.Schema) -> Path:
    # Dictionary encoding only for strings: on many distinct floats it is slow and large.
    strings = [f.name for f in schema if f.type == pa.string()]
    atomic_write(path, lambda tmp: pq.write_table(table.cast(schema), tmp, use_dictionary=strings))
    return path


def write_part(directory: Path, name: str, table: pa.Table, schema: pa.Schema) -> Path:
    return write(directory / part_file(name), table, schema)


def merge(directory: Path, names: Iterable[str], schema: pa.Schema) -> tuple[Path, list[Path]]:
    """Merge parts into a new segment, then delete them; returns the segment and the parts."""
    parts = [directory / part_file(name) for name in names]
    table = pa.concat_tables(pq.read_table(part, schema=schema) for part in parts)
    found = directory.glob(part_file(f"{SEGMENT}*"))
    numbers = [int(p.stem.removeprefix(SEGMENT)) for p in found]
    segment = write(directory / part_file(segment_key(max(numbers, default=0) + 1)), table, schema)
    for part in parts:
        part.unlink()
    return segment, parts


def read(directory: Path, schema: pa.Schema, keys: set[str] | None = None) -> pa.Table:
    """The table: every key's rows from its newest file (only `keys`' rows, where given)."""
    return retried(lambda: _read(directory, schema, keys))


def retried(read: Callable[[], T]) -> T:
    """`read()` of a table's files, read again where a part it listed was merged into a segment
    (and deleted) before it was opened."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return read()
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def table_files(directory: Path) -> list[Path]:
    """The table's parts and segments, without the files still being written."""
    return [p for p in directory.glob(f"*{PART_SUFFIX}") if not p.name.startswith((".", "_"))]


def _read(directory: Path, schema: pa.Schema, keys: set[str] | None) -> pa.Table:
    listed = table_files(directory)
    segments = sorted((p for p in listed if p.name.startswith(SEGMENT)), reverse=True)
    parts = sorted(p for p in listed if not p.name.startswith(SEGMENT))
    parts = [p for p in parts if keys is None or p.stem in keys]
    tables = [pq.read_table(part, schema=schema) for part in parts]
    covered = {p.stem for p in parts}
    for segment in segments:
        table = pq.read_table(segment, schema=schema)
        mask = pc.invert(pc.is_in(table[KEY], value_set=pa.array(sorted(covered), pa.string())))
        if keys is not None:
            mask = pc.and_(mask, pc.is_in(table[KEY], value_set=pa.array(sorted(keys))))
        table = table.filter(mask)
        covered |= set(pc.unique(table[KEY]).to_pylist())
        tables.append(table)
    return pa.concat_tables(tables) if tables else schema.empty_table()
