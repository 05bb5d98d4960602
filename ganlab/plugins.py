"""Plugins: the user's own Python, named in a sweep file's `imports:`, imported before the file
is validated, shipped to every Ray worker, and recorded with the rows it made.

An entry is a file (`my_gans.py`) or a package directory (`my_gans/`, with its `__init__.py`
and whatever files it reads, such as images), both relative to the sweep file, or a module name
(`my_package.losses`, importable where the driver runs). A file or directory is imported as a
module named after it (`my_gans`), so its functions pickle by reference and a worker imports it
under the same name. Every plugin's source is hashed (SHA-256 of the file's bytes; of a
directory's files, names and bytes, caches aside); the sweep's record keeps the hashes, so
`--resume` refuses a plugin that changed, and every row says which code made it (`plugins`
column: `module=hash16`, comma-separated).

Workers get the code through Ray's runtime environment (`runtime_env`: `py_modules` of the files,
and of each module's top-level package where it is not an installed one), locally as on a
cluster, and `ensure` imports it there, checking its hash, before the trial's configuration is
read.
"""

import hashlib
import importlib
import importlib.util
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ganlab.config import ConfigError

HASH_SHOWN = 16  # hex digits of a hash shown in rows and messages


class PluginImportError(ValueError):
    """A plugin that cannot be imported; the message names it, its file and line."""


@dataclass(frozen=True)
class Plugin:
    given: str  # as the sweep file (or --imports) wrote it
    module: str  # the module name it is imported as, on the driver and on every worker
    file: str  # the module's source: a file, or a package's directory; absolute
    sha256: str  # `source_hash` of it
    ship: str  # what Ray's `py_modules` gets: the file, a package directory, or "" (installed)

    @property
    def short(self) -> str:
        return f"{self.module}={self.sha256[:HASH_SHOWN]}"


def load(entries: Any, base: Path, where: str = "imports") -> tuple[Plugin, ...]:
    """Import every entry of `imports` (files relative to `base`, or module names) in order;
    raises PluginImportError naming the entry, its file and line, or ValueError where `entries`
    is not a list of strings."""
    if entries is None:
        return ()
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ValueError(f"{where}: must be a list of files (my_gans.py) or module names "
                         f"(my_package.losses); got {entries!r}")  # fmt: skip
    return tuple(_load_one(entry, base) for entry in entries)


def _load_one(entry: str, base: Path) -> Plugin:
    if entry.endswith((".py", "/")) or "/" in entry:
        return _load_file(entry, (base / entry).resolve())
    return _load_module(entry)


def _load_file(entry: str, path: Path) -> Plugin:
    package = path.is_dir()
    if package and not (path / "__init__.py").is_file():
        raise PluginImportError(f"{entry}: a directory without an __init__.py ({path})")
    if not package and not path.is_file():
        raise PluginImportError(f"{entry}: no such file or directory ({path})")
    name = path.stem
    if not name.isidentifier():
        raise PluginImportError(f"{entry}: {name!r} is not a Python module name; rename the file")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if _source(loaded) != path:
            raise PluginImportError(f"{entry}: a module named {name!r} is imported already "
                                    f"(from {getattr(loaded, '__file__', 'built in')}); "
                                    "rename the file")  # fmt: skip
        return _plugin(entry, loaded, str(path))
    if package:
        spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        for loaded_name in [n for n in sys.modules if n == name or n.startswith(f"{name}.")]:
            del sys.modules[loaded_name]
        raise PluginImportError(_failure(entry, path, error)) from None
    return _plugin(entry, module, str(path))


def _load_module(entry: str) -> Plugin:
    try:
        module = importlib.import_module(entry)
    except ModuleNotFoundError as error:
        if error.name and entry.startswith(error.name):  # the plugin itself is not there
            raise PluginImportError(f"{entry}: no module {error.name!r} (a file needs its .py; "
                                    "a module must be importable here)") from None  # fmt: skip
        raise PluginImportError(_failure(entry, None, error)) from None
    except BaseException as error:
        raise PluginImportError(_failure(entry, None, error)) from None
    top = sys.modules[entry.split(".")[0]]
    return _plugin(entry, module, _shipped(top))


def _plugin(entry: str, module: ModuleType, ship: str) -> Plugin:
    source = _source(module)
    return Plugin(entry, module.__name__, str(source), source_hash(source), ship)


def _source(module: ModuleType) -> Path:
    """A module's file, or a package's directory (the `__init__.py`'s)."""
    file = Path(getattr(module, "__file__", "") or "").resolve()
    return file.parent if file.name == "__init__.py" else file


def _shipped(top: ModuleType) -> str:
    """The directory (package) or file of a top-level module, "" where it is installed (the
    cluster's nodes have it, or it cannot be shipped from here anyway)."""
    file = Path(top.__file__).resolve()
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if any(file.is_relative_to(root) for root in installed):
        return ""
    return str(file.parent if file.name == "__init__.py" else file)


def _failure(entry: str, path: Path | None, error: BaseException) -> str:
    """`entry: file, line n: Type: message`, the line the plugin's own code failed at."""
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{error.filename}, line {error.lineno}"
        return f"{entry}: {where}: SyntaxError: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if _in_plugin(f.filename, path)]
    frame = (ours or frames or [None])[-1]
    where = f"{frame.filename}, line {frame.lineno}: " if frame is not None else ""
    return f"{entry}: {where}{type(error).__name__}: {error}"


def _in_plugin(filename: str, path: Path | None) -> bool:
    """Whether a traceback's file is the plugin's own code (its file or package; for a module
    name, anything but Python's import machinery and ganlab)."""
    if filename.startswith("<"):
        return False
    file = Path(filename).resolve()
    if path is not None:
        return file == path or file.is_relative_to(path)
    return not file.is_relative_to(Path(__file__).resolve().parent)


def source_hash(source: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (their relative names and bytes,
    in sorted order; Python's caches left out, as a worker writes its own)."""
    source = Path(source)
    if source.is_file():
        return hashlib.sha256(source.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in source.rglob("*") if p.is_file() and _hashed(p, source)):
        name = file.relative_to(source).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name)
        data = file.read_bytes()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _hashed(file: Path, root: Path) -> bool:
    return "__pycache__" not in file.relative_to(root).parts and file.suffix != ".pyc"


def describe(plugins: tuple[Plugin, ...]) -> str:
    """What the rows' `plugins` column holds: `module=hash16`, comma-separated; "" for none."""
    return ",".join(p.short for p in plugins)


def runtime_env(plugins: tuple[Plugin, ...]) -> dict[str, Any] | None:
    """Ray's runtime environment that gives every worker the plugins' code; None for none."""
    shipped = list(dict.fromkeys(p.ship for p in plugins if p.ship))
    return {"py_modules": shipped} if shipped else None


def ensure(plugins: tuple[Plugin, ...]) -> None:
    """On a worker: import every plugin (from the runtime environment), and check it is the
    code the driver hashed. Raises ConfigError, which the tables show as it is."""
    for plugin in plugins:
        module = sys.modules.get(plugin.module)
        if module is None:
            try:
                module = importlib.import_module(plugin.module)
            except Exception as error:
                raise ConfigError("imports", f"{plugin.given}: cannot be imported on this node "
                                  f"({type(error).__name__}: {error})") from None  # fmt: skip
        source = _source(module)
        found = source_hash(source)
        if found != plugin.sha256:
            raise ConfigError("imports", f"{plugin.given}: this node's {source} "
                              f"(sha256 {found[:HASH_SHOWN]}) is not the driver's "
                              f"({plugin.sha256[:HASH_SHOWN]})")  # fmt: skip
