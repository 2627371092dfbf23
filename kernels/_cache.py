"""A versioned on-disk cache for the kernels.

numba's cache notices edits to the file that defines a kernel (``cpu.py``: its index stores that
file's hash), not to the functions it calls in other files (``formulas.py``). So every kernel in this
package is cached under a directory named after a hash of those other files (``formulas.py``,
``trajectories.py`` and this one) plus the numba version: editing a called function starts a fresh cache.

Location: ``$MINIDIFF_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/minidiff`` (``~/.cache/minidiff``),
then ``numba-<numba version>-<hash>``. Functions defined outside this package keep numba's defaults.

Safety: the cache holds pickles that numba loads, so every directory this module creates is private
(mode 0700, owner only), and the versioned directory and its subdirectories are made 0700 even when
they exist with wider permissions. A corrupt entry (a truncated ``.nbc``, a garbled ``.nbi``, e.g.
from a disk-full or a killed process) is deleted with a warning and the kernel recompiled, instead of
every later process dying with ``UnpicklingError`` (numba itself only tolerates a missing file).
"""
from __future__ import annotations

import functools
import hashlib
import os
import stat
import warnings
from pathlib import Path

import numba
from numba.core import caching

PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCES = ("_cache.py", "formulas.py", "trajectories.py")  # what kernels call but numba does not track


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 over :data:`_SOURCES`, first 16 hex digits."""
    h = hashlib.sha256()
    for name in _SOURCES:
        p = PACKAGE_DIR / name
        h.update(name.encode())
        h.update(p.read_bytes() if p.exists() else b"")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def cache_dir() -> Path:
    root = os.environ.get("MINIDIFF_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minidiff"
    return Path(root) / f"numba-{numba.__version__}-{source_hash()}"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700; the levels from the versioned
    :func:`cache_dir` down are also narrowed to 0700 if they already exist wider."""
    path = Path(path)
    top = cache_dir()
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:  # another process made it first
            pass
    p = path
    while True:
        if p == top or top in p.parents:
            if stat.S_IMODE(p.stat().st_mode) & 0o077:
                p.chmod(0o700)
        if p == top or p.parent == p:
            break
        p = p.parent
    return path


def _ours(path) -> bool:
    """Whether a cache file lies under :func:`cache_dir` (only our entries are dropped when corrupt)."""
    try:
        return cache_dir() in Path(path).resolve().parents
    except OSError:
        return False


def _drop(path, err) -> None:
    warnings.warn(f"minidiff: dropping the corrupt kernel cache entry {path} ({type(err).__name__}: {err}); "
                  "recompiling", RuntimeWarning, stacklevel=3)
    try:
        os.unlink(path)
    except OSError:
        pass


class VersionedCacheLocator(caching.UserProvidedCacheLocator):
    """numba cache locator for files in this package: :func:`cache_dir` instead of ``__pycache__``."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = str(cache_dir() / Path(py_file).stem)

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != PACKAGE_DIR:
            return None
        return caching._SourceFileBackedLocatorMixin.from_function.__func__(cls, py_func, py_file)

    def ensure_cache_path(self):
        ensure_private_dir(Path(self.get_cache_path()))
        super().ensure_cache_path()


def _tolerant_load_index(orig):
    def _load_index(self):
        try:
            return orig(self)
        except FileNotFoundError:
            return {}
        except Exception as err:  # truncated or garbled pickle: UnpicklingError, EOFError, ValueError, ...
            if not _ours(self._index_path):
                raise
            _drop(self._index_path, err)
            return {}
    _load_index._minidiff_tolerant = True
    return _load_index


def _tolerant_load_data(orig):
    def _load_data(self, name):
        try:
            return orig(self, name)
        except OSError:
            raise  # numba's load() treats a missing data file as a miss
        except Exception as err:
            path = self._data_path(name)
            if not _ours(path):
                raise
            _drop(path, err)
            raise OSError(f"corrupt cache entry {path}") from err  # -> a cache miss in load()
    _load_data._minidiff_tolerant = True
    return _load_data


def install() -> None:
    """Put :class:`VersionedCacheLocator` first in numba's locator list, and make the loading of
    cache files under :func:`cache_dir` drop corrupt entries (both idempotent)."""
    for impl in (caching.CacheImpl,):
        if VersionedCacheLocator not in impl._locator_classes:
            impl._locator_classes.insert(0, VersionedCacheLocator)
    f = caching.IndexDataCacheFile
    if not getattr(f._load_index, "_minidiff_tolerant", False):
        f._load_index = _tolerant_load_index(f._load_index)
    if not getattr(f._load_data, "_minidiff_tolerant", False):
        f._load_data = _tolerant_load_data(f._load_data)


install()
