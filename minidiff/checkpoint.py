"""Checkpoints without pickle: one safetensors file holding the tensors, with a small JSON document
(model config, schedule, step, training options) in the safetensors header metadata.

* Tensors are grouped by prefix: ``model.*`` (raw weights), ``ema.*`` (EMA weights), ``optim.*``
  (optimizer state: one tensor per state entry, scalars as 0-d tensors) and ``rng.*`` (RNG states as
  uint8 tensors). A weights-only file (what ships in :mod:`minidiff.weights`) holds ``ema.*`` only.
* Writes are atomic: a temporary file in the same folder, ``fsync``, then :func:`os.replace`, so a
  reader (or a run killed mid-write) sees either the old file or the new one, never a torn file.
* Reading never executes anything: safetensors is a JSON header plus raw bytes. A file that is not a
  minidiff checkpoint raises :class:`ValueError`. Loading weights into a model whose architecture does
  not match raises :class:`ValueError` naming the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "minidiff-checkpoint"
VERSION = 1

__all__ = ["FORMAT", "save", "load", "read_meta", "atomic_write_bytes", "atomic_write_text", "open_append",
           "lock_folder", "remove_stale_temps", "load_state_into", "optimizer_state_to_tensors",
           "optimizer_state_from_tensors", "check_state_dict", "check_finite_weights"]

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``,
    then fsync the folder so the rename itself is durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems refuse fsync on folders
        pass


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text. The rename replaces a symbolic link planted at
    ``path`` by a regular file; the link's target is never opened."""
    atomic_write_bytes(path, text.encode("utf-8"))


def open_append(path):
    """Open ``path`` for appending text without following a symbolic link (``O_NOFOLLOW``): a link
    planted at ``path`` raises ``OSError`` instead of redirecting the writes outside its folder."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if Path(path).is_symlink():
            raise OSError(f"{path} is a symbolic link; refusing to write through it") from None
        raise e
    return os.fdopen(fd, "a", encoding="utf-8")


class lock_folder:
    """An exclusive, non-blocking lock on ``folder`` (``flock`` on ``folder/.lock``), held while the
    context is open. A second holder gets ``RuntimeError`` at once instead of interleaving writes.
    The lock is released by the kernel when the process dies, so a killed run never leaves it held."""

    def __init__(self, folder, what: str = "a minidiff run"):
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self._fd = None

    def __enter__(self):
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self.path.parent} is in use by another process ({self.what} holds "
                               f"{self.path}); wait for it to finish or choose another --out") from None
        self._fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None
        return False


def remove_stale_temps(folder, owned=None) -> list[str]:
    """Delete the temporary files ``.<name>.<random>.tmp`` that :func:`atomic_write_bytes` leaves
    behind when a process is killed mid-write (call it while holding :class:`lock_folder`); with
    ``owned`` (a predicate on ``<name>``) only those of files the caller writes. Returns their names."""
    removed = []
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        target = p.name[1:-len(TMP_SUFFIX)].rpartition(".")[0]
        if owned is not None and not owned(target):
            continue
        if p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(p.name)
    return sorted(removed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Save ``tensors`` (name -> tensor) and the JSON-able ``meta`` to ``path`` atomically."""
    from safetensors.torch import save as st_save

    doc = {"format": FORMAT, "version": VERSION, **meta}
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata={"minidiff": json.dumps(doc, sort_keys=True)}))


def load(path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` from a checkpoint; ``ValueError`` if the file is not one."""
    from safetensors.torch import load as st_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ValueError(f"{path} is not a valid minidiff checkpoint (not a safetensors file: {e})") from None
    return tensors, _meta_from_bytes(data, path)


def read_meta(path) -> dict:
    """Only the JSON document of a checkpoint (reads the header, not the tensors)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a valid minidiff checkpoint (too short)")
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            raise ValueError(f"{path} is not a valid minidiff checkpoint (implausible header size)")
        return _meta_from_bytes(head + f.read(n), path)


def _meta_from_bytes(data: bytes, path) -> dict:
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        doc = json.loads(header["__metadata__"]["minidiff"])
    except Exception:
        raise ValueError(f"{path} is not a valid minidiff checkpoint (no minidiff metadata)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a valid minidiff checkpoint (format {doc.get('format')!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {doc.get('version')!r} (expected {VERSION})")
    return doc


def subset(tensors: dict, prefix: str) -> dict:
    """Entries under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise ``ValueError`` naming every missing, unexpected, mis-shaped or mis-typed key (a stored
    tensor must have exactly the model's dtype: nothing is cast). ``model`` may live on the ``meta``
    device, so a file can be checked against a config before any memory is allocated."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    dtypes = [f"{k}: checkpoint {state[k].dtype} vs model {own[k].dtype}"
              for k in sorted(set(own) & set(state)) if state[k].dtype != own[k].dtype]
    if missing or unexpected or shapes or dtypes:
        parts = []
        if dtypes:  # never cast silently (an int64 / bool / complex tensor is not a weight)
            parts.append("dtype mismatch: " + "; ".join(dtypes[:10]) + (" ..." if len(dtypes) > 10 else ""))
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:10]) + (" ..." if len(shapes) > 10 else ""))
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
        raise ValueError(f"{what} does not match the model architecture: " + " | ".join(parts))


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    check_state_dict(model, state, what)
    model.load_state_dict(state, strict=True)


def check_finite_weights(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise :class:`minidiff._checks.NonFiniteError` naming the first tensors holding NaN or inf
    (called before saving, so a diverged run never writes over good weights)."""
    from ._checks import NonFiniteError

    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteError(f"{what}: non-finite values in {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                             f"refusing to save them")


# ---------------------------------------------------------------------------- optimizer state
def optimizer_state_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Flatten ``opt.state_dict()`` into tensors ``{"<param>.<name>": tensor}`` plus the JSON-able
    param groups (hyper-parameters)."""
    sd = opt.state_dict()
    out = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            out[f"{pid}.{name}"] = val if isinstance(val, torch.Tensor) else torch.tensor(val)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return out, groups


def optimizer_state_from_tensors(opt: torch.optim.Optimizer, tensors: dict, groups: list,
                                 what: str = "optimizer state") -> None:
    """Inverse of :func:`optimizer_state_to_tensors`. Checked before loading: parameter ids exist,
    per-parameter moments (``exp_avg``, ``exp_avg_sq``, ...) have their parameter's shape and dtype,
    ``step`` entries are finite non-negative whole numbers; else ``ValueError`` naming the key."""
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict = {}
    for key, val in tensors.items():
        pid, _, name = key.partition(".")
        if not pid.isdigit() or int(pid) >= len(params) or not name:
            raise ValueError(f"{what}: unexpected key {key!r} (the optimizer has {len(params)} parameters)")
        p = params[int(pid)]
        if name == "step":
            v = val.double() if val.is_floating_point() or val.dtype in (torch.int32, torch.int64) else None
            if v is None or v.numel() != 1 or not bool(torch.isfinite(v).all()) or float(v) < 0 \
                    or float(v) != int(float(v)):
                raise ValueError(f"{what}: {key} must be a non-negative whole number, got {val.tolist()!r}")
        elif val.is_floating_point() and val.ndim > 0:
            if tuple(val.shape) != tuple(p.shape) or val.dtype != p.dtype:
                raise ValueError(f"{what}: {key} has shape {tuple(val.shape)} {val.dtype}; its parameter "
                                 f"has {tuple(p.shape)} {p.dtype}")
        state.setdefault(int(pid), {})[name] = val
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": groups})
