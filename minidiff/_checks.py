"""Argument checks shared by every module: one place, one message shape ("<name> must be ..., got ...").

Each check returns the cleaned value (a Python ``int`` / ``float``) so a call path validates once and
passes plain numbers on. Booleans are never integers here (``True`` is not a step count), floats are
never silently truncated, and NaN fails every range check (comparisons with NaN are false, so each
check is written as "raise unless the good condition holds").

:func:`check_finite_state` is the samplers' guard against silent NaN: a cheap ``isfinite().all()``
next to a network evaluation, raising :class:`NonFiniteError` naming the step and what produced it.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["NonFiniteError", "check_int", "check_count", "check_index", "check_real", "check_positive",
           "check_nonnegative", "check_probability", "check_tensor", "check_batch", "check_t_index_array",
           "t_index_vector", "check_finite_state", "is_int"]


class NonFiniteError(FloatingPointError):
    """A NaN or infinity appeared where the course promises finite numbers (sampler states, losses)."""


def is_int(v) -> bool:
    """True for Python / numpy integers, False for booleans, floats and everything else."""
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_int(v, name: str) -> int:
    """``v`` as an ``int``; ``TypeError`` for booleans, floats (even ``2.0``), strings, None."""
    if not is_int(v):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    return int(v)


def check_count(v, name: str, low: int = 1, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (``high=None``: no upper bound)."""
    v = check_int(v, name)
    if v < low or (high is not None and v > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {rng}, got {v}")
    return v


def check_index(v, name: str, size: int) -> int:
    """An integer index in ``[0, size)``; negative indices do not wrap around."""
    return check_count(v, name, 0, size - 1)


def check_real(v, name: str) -> float:
    """A finite real number as ``float``; ``TypeError`` for booleans, strings and None."""
    ok = isinstance(v, (numbers.Real, np.floating, np.integer)) or (
        hasattr(v, "__float__") and getattr(v, "ndim", 0) == 0 and not getattr(v, "is_complex", lambda: False)())
    if isinstance(v, (bool, np.bool_)) or not ok:  # a 0-d tensor or array is a number; True is not
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def check_positive(v, name: str) -> float:
    """A finite number ``> 0``."""
    v = check_real(v, name)
    if not v > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    return v


def check_nonnegative(v, name: str) -> float:
    """A finite number ``>= 0``."""
    v = check_real(v, name)
    if not v >= 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


def check_probability(v, name: str, *, closed_right: bool = True) -> float:
    """A number in ``[0, 1]`` (or ``[0, 1)`` with ``closed_right=False``)."""
    v = check_real(v, name)
    if not (0.0 <= v <= 1.0) or (not closed_right and v == 1.0):
        raise ValueError(f"{name} must lie in [0, 1{']' if closed_right else ')'}, got {v}")
    return v


def check_tensor(x, name: str):
    """Raise ``TypeError`` unless ``x`` is a torch tensor."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_batch(x, name: str = "x", min_ndim: int = 1, *, exact_float: bool = False):
    """The one dtype check: ``x`` a floating torch tensor with at least ``min_ndim`` dims (batch first);
    with ``exact_float`` (the samplers, the kernels) float32 or float64 only. Returns ``x``."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
    if exact_float and x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have a batch dimension first: expected >= {min_ndim} dims, "
                         f"got shape {tuple(x.shape)}")
    return x


def check_t_index_array(t_index, T: int, name: str = "t_index") -> np.ndarray:
    """``t_index`` (an int, a sequence, an array or a tensor) as a numpy integer array, every entry in
    ``[0, T)``: ``TypeError`` for non-integers, ``IndexError`` for entries out of range."""
    arr = np.asarray(t_index.detach().cpu() if hasattr(t_index, "detach") else t_index)
    if arr.dtype == object and all(is_int(v) for v in arr.reshape(-1).tolist()):
        raise IndexError(f"{name} must lie in [0, {T - 1}] for this T={T} schedule; "
                         f"got an integer too large for int64")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers in [0, {T}), got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= T):
        raise IndexError(f"{name} must lie in [0, {T - 1}] for this T={T} schedule; "
                         f"got values in [{arr.min()}, {arr.max()}]")
    return arr


def t_index_vector(t_index, batch: int, T: int | None = None, *, device=None, name: str = "t_index"):
    """The one conversion of ``t_index`` to a per-sample ``(batch,)`` int64 tensor: an int (or a 1-entry
    array) broadcasts, otherwise one entry per sample. With ``T`` every entry must lie in ``[0, T)``
    (:func:`check_t_index_array`); without it (a network does not know ``T``) only integer dtype is
    required, and a tensor stays on its device (no host round trip). ``device``: where the result lives."""
    import torch

    if T is None and type(t_index) is int and type(batch) is int and batch >= 0:
        return torch.full((batch,), t_index, dtype=torch.int64, device=device)  # the samplers' call, in one op
    if T is not None:
        vec = torch.as_tensor(check_t_index_array(t_index, T, name), dtype=torch.int64, device=device)
    else:
        vec = torch.as_tensor(t_index, device=device)
        if vec.is_floating_point() or vec.is_complex() or vec.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {vec.dtype}")
        vec = vec.to(torch.int64)
    vec = vec.reshape(-1)
    if vec.numel() == 1:
        vec = vec.expand(batch).contiguous()
    if vec.numel() != batch:
        raise ValueError(f"{name} must be a scalar or have one entry per sample: expected {batch}, "
                         f"got {vec.numel()}")
    return vec


def check_finite_state(x, what: str, index: int | None = None, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` if ``x`` (a tensor) holds a NaN or infinity.

    ``what`` names the producer ("the model output", "x_T", "the update"), ``index`` the sampler step;
    ``hint`` adds the parameters that may be to blame (e.g. ``"eta=inf"``). One reduction over ``x``:
    cheap next to the network evaluation that produced it. That reduction is a sum: a NaN or infinity
    makes any sum of the elements non-finite, so a finite sum proves every element finite (a non-finite
    sum, e.g. an overflow, is settled by ``torch.isfinite``); on the CPU it costs a third to a twentieth
    of ``isfinite().all()`` at the course's sizes (no boolean tensor), and it never warns.
    """
    import torch

    if type(x) is torch.Tensor and x.is_floating_point():
        if math.isfinite(float((x.detach() if x.requires_grad else x).sum())):
            return
    if bool(torch.isfinite(x).all()):
        return
    n_bad = int((~torch.isfinite(x)).sum())
    where = f" at step {index}" if index is not None else ""
    extra = f" ({hint})" if hint else ""
    raise NonFiniteError(f"{what}{where} holds {n_bad} non-finite value(s) (NaN or inf){extra}; "
                         f"stopping instead of passing them on")


def fields_from_dict(cls, d, what: str, skip: tuple[str, ...] = ()) -> dict:
    """Keyword arguments for dataclass ``cls`` from a loaded JSON object ``d``, requiring every field.

    Nothing takes a default: a missing field, an unknown field, or a value whose JSON type differs from
    the field's default's type (int, float -- an int is accepted --, str, bool, list of ints for a tuple)
    is a ``ValueError`` naming ``what`` (the file and section) and the key. Fields in ``skip`` are
    required but converted by the caller.
    """
    import dataclasses

    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing = sorted(set(fields) - set(d))
    unknown = sorted(set(d) - set(fields))
    if missing:
        raise ValueError(f"{what}: missing field(s) {missing} (every field is required; none takes a default)")
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}")
    kw = {}
    for name, f in fields.items():
        v = d[name]
        if name in skip:
            kw[name] = v
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        kw[name] = _typed(v, default, f"{what}: field {name!r}")
    return kw


def _typed(v, default, what: str):
    if isinstance(default, bool):
        ok = isinstance(v, bool)
    elif isinstance(default, int):
        ok = is_int(v)
    elif isinstance(default, float):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        v = float(v) if ok else v
    elif isinstance(default, str) or default is None:
        ok = isinstance(v, str) if isinstance(default, str) else True
    elif isinstance(default, tuple):
        ok = isinstance(v, (list, tuple)) and all(is_int(e) for e in v)
        v = tuple(v) if ok else v
    else:
        ok = True
    if not ok:
        raise ValueError(f"{what} must be of type {type(default).__name__}, got {type(v).__name__} {v!r}")
    return v
