"""A versioned on-disk cache for the kernels.

numba's cache notices edits to the file that defines a kernel (``cpu.py``: its index stores that
file's hash), not to the functions it calls in other files (``formulas.py``). So every kernel in this
package is cached under a directory named after a hash of those other files (``formulas.py`` and this
one) plus the numba version: editing a called function starts a fresh cache.

Location: ``$MINIDIFF_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/minidiff`` (``~/.cache/minidiff``),
then ``numba-<numba version>-<hash>``. Functions defined outside this package keep numba's defaults.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numba
from numba.core import caching

PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCES = ("_cache.py", "formulas.py")  # what kernels call but numba does not track


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


def install() -> None:
    """Put :class:`VersionedCacheLocator` first in numba's locator list (idempotent)."""
    for impl in (caching.CacheImpl,):
        if VersionedCacheLocator not in impl._locator_classes:
            impl._locator_classes.insert(0, VersionedCacheLocator)


install()
