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

__all__ = ["FORMAT", "save", "load", "read_meta", "atomic_write_bytes", "load_state_into",
           "optimizer_state_to_tensors", "optimizer_state_from_tensors", "check_state_dict"]


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``,
    then fsync the folder so the rename itself is durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    """Raise ``ValueError`` naming every missing, unexpected or mis-shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
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


def optimizer_state_from_tensors(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": groups})
