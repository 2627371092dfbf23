"""The one dispatch point into the compiled kernels (``minidiff.kernels``).

Every fused update the course uses goes through a function here. Each takes torch tensors (numpy
arrays are accepted and returned as numpy), and a ``backend=`` argument: ``"numba"`` (the default:
fused Numba kernels for CPU, or CUDA for CUDA tensors) or ``"torch"`` (a plain torch reference: the
same formula in eager ops, fed by the same ``minidiff.kernels.formulas.*_coefficients`` as the kernels).
Every update goes through one driver, :func:`_update` (resolve, check, noise source, outputs, launch or
reference, result). :func:`use_backend` changes the default in a ``with`` block.

Noise: pass ``noise=`` (a tensor shaped like ``x``) or ``seed=`` (an int) with a ``step`` counter.
With a seed, noise is a pure function of ``(seed, sample, element, step)`` (counter-based
Philox4x32-10, Salmon et al. 2011): :func:`normal` draws exactly the numbers the kernels draw
in-kernel, so both backends see the same noise.

Outputs: every update allocates its result, or writes into ``out=`` (and ``x0_out=`` for DDPM/DDIM),
arrays shaped like ``x`` with its dtype and device, contiguous and writeable, as NumPy's ``out=``
does: a loop that reuses its buffers then touches no fresh memory. ``out`` may be an input itself
(``out=x`` updates in place: every kernel reads element ``i`` before it writes element ``i``), but
must not partly overlap one; a stencil's ``out`` must not overlap ``u`` at all.

Arrays are viewed as ``(B, n)``: batch first, the other axes flattened (the stencils keep their last
one or two axes as space); on the CPU as one row ``(1, B n)`` when every sample gets the same
coefficients and no per-sample Philox counter is needed (bitwise the same results, without a view per
short row). float32 and float64 are supported; inputs are validated before any kernel
runs and errors name the offending argument. Tensors must live on a CPU or CUDA device (both backends
refuse others, e.g. ``meta``, naming the argument); numpy arrays with negative strides are copied.

Gradients: neither backend tracks them. Inputs are detached, so results never require grad on
either backend (the samplers built on these updates run many steps; a graph through all of them
would only cost memory). Differentiate through the formulas in plain torch where that is wanted.
Both backends treat edge input alike: empty arrays give empty results, ``clip_x0`` must be a real
number.

Nothing here imports numba at module import time; kernels compile on first use and are cached on
disk (see ``minidiff/kernels/_cache.py``).
"""
from __future__ import annotations

import contextlib
import math
import operator
import weakref

import numpy as np
import torch

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend", "normal",
    "q_sample", "ddpm_step", "ddim_step", "langevin_step", "reverse_sde_step",
    "pf_ode_euler_step", "pf_ode_heun_step", "ftcs_step_1d", "ftcs_step_2d", "walker_step",
    "BOUNDARY_CONDITIONS", "ftcs_ratio", "gm_trajectories",
]

BACKENDS = ("numba", "torch")
BOUNDARY_CONDITIONS = ("periodic", "dirichlet", "neumann")  # neumann = zero flux
_BC_CODE = {"periodic": 0, "dirichlet": 1, "neumann": 2, "zero_flux": 2}
_NOISE_NONE, _NOISE_GIVEN, _NOISE_PHILOX = 0, 1, 2  # = minidiff.kernels.formulas.NOISE_*
_DTYPES = (torch.float32, torch.float64)
_default = "numba"


def get_backend() -> str:
    return _default


def set_backend(name: str) -> None:
    """Set the default backend for every call that does not pass ``backend=``."""
    global _default
    _default = _resolve(name)


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("torch"): ...`` -- temporarily change the default backend."""
    global _default
    old, _default = _default, _resolve(name)
    try:
        yield
    finally:
        _default = old


def _resolve(backend: str | None) -> str:
    name = _default if backend is None else backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


# ============================================================================ validation
def _as_tensor(x, name: str) -> torch.Tensor:
    """A torch view of ``x`` (zero-copy for numpy unless read-only or negatively strided), checked to
    be float32/float64 with >= 1 dim on a CPU or CUDA device, detached from autograd."""
    if type(x) is torch.Tensor and x.dtype in _DTYPES and x.ndim >= 1 and (x.is_cpu or x.is_cuda):
        return x.detach() if x.requires_grad else x  # the common case, checked in ~0.5 us
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
        negative = any(st < 0 for st in x.strides)
        x = torch.from_numpy(x if x.flags.writeable and not negative else x.copy())
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension first, got a 0-d array")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be on a CPU or CUDA device, got device {x.device}")
    return x.detach()


def _like(x: torch.Tensor, other, name: str, ref: str = "x") -> torch.Tensor:
    """``other`` as a tensor with ``x``'s shape, dtype and device, else an error naming ``name``
    (``ref`` is the name of ``x`` in the message)."""
    if (type(other) is torch.Tensor and other.shape == x.shape and other.dtype == x.dtype and other.is_cpu
            and x.is_cpu and not other.requires_grad):
        return other  # the common case: what _as_tensor would return, without its checks twice (~1 us)
    t = _as_tensor(other, name)
    if t.shape == x.shape and t.dtype == x.dtype and (t.is_cpu and x.is_cpu or t.device == x.device):
        return t
    if t.shape != x.shape:
        raise ValueError(f"{name} must have shape {tuple(x.shape)} like {ref}, got {tuple(t.shape)}")
    if t.dtype != x.dtype:
        raise TypeError(f"{name} must have dtype {x.dtype} like {ref}, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on {x.device} like {ref}, got {t.device}")
    return t


def _check_step(seed, step):
    if (seed is None or type(seed) is int) and type(step) is int and 0 <= step < 4294967296:
        return  # the common case without the numbers.Integral checks
    from ._checks import is_int

    if seed is not None and not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not is_int(step) or not 0 <= int(step) < 2**32:
        raise ValueError(f"step must be an int in [0, 2**32), got {step!r}")


def _noise_source(x, noise, seed, step, needed: bool, ref: str = "x"):
    """``(mode, noise tensor or None, seed)`` after validating ``noise`` / ``seed`` / ``step``."""
    _check_step(seed, step)
    if not needed:
        return _NOISE_NONE, None, seed
    if noise is not None:
        return _NOISE_GIVEN, _like(x, noise, "noise", ref), seed
    if seed is None:
        raise ValueError("pass either noise= (a tensor shaped like x) or seed= (an int)")
    return _NOISE_PHILOX, None, int(seed)


def _t_scalar(t_index, schedule, name="t_index", low=0) -> int:
    try:
        t = operator.index(t_index)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(t_index).__name__}") from None
    if not low <= t < schedule.T:
        raise IndexError(f"{name} must lie in [{low}, {schedule.T - 1}] for this T={schedule.T} "
                         f"schedule, got {t}")
    return t


def _t_vector(t_index, B: int, schedule) -> np.ndarray:
    """Per-sample ``t_index`` as a ``(B,)`` int64 array, checked against the schedule. Integers too
    large for int64 (numpy makes them dtype object) get the range message, not a dtype one."""
    T = schedule.T
    if type(t_index) is int and 0 <= t_index < T:  # the common cases, checked without copies
        arr = np.empty(B, np.int64)
        arr.fill(t_index)  # empty + fill: 1.0 us against np.full's 2.2 at 16 samples
        return arr
    if (type(t_index) is torch.Tensor and t_index.dtype == torch.int64 and t_index.is_cpu and t_index.ndim == 1
            and t_index.shape[0] == B):
        arr = (t_index if t_index.is_contiguous() else t_index.contiguous()).numpy()
        if not B or arr.view(np.uint64).max() < T:  # one reduction: a negative entry is >= 2**63 as uint64
            return arr
    raw = t_index if hasattr(t_index, "detach") else np.asarray(t_index)
    if isinstance(raw, np.ndarray) and raw.dtype == object and raw.size:
        flat = raw.reshape(-1).tolist()
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
            raise IndexError(f"t_index must lie in [0, {schedule.T - 1}] for this T={schedule.T} schedule; "
                             f"got values in [{min(flat)}, {max(flat)}]")
    arr = schedule.check_t_index(t_index, "t_index")
    arr = np.asarray(arr, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        arr = np.full(B, arr[0], dtype=np.int64)
    if arr.size != B:
        raise ValueError(f"t_index must be a scalar or have one entry per sample: expected {B}, got {arr.size}")
    return np.ascontiguousarray(arr)


def ftcs_ratio(D: float, dt: float, dx: float) -> float:
    """The FTCS mesh ratio ``r = D dt / dx^2``."""
    if not dx > 0:
        raise ValueError(f"dx must be > 0, got {dx}")
    if not (D >= 0 and dt >= 0):
        raise ValueError(f"D and dt must be >= 0, got D={D}, dt={dt}")
    return float(D) * float(dt) / float(dx) ** 2


def _check_stencil(D, dt, dx, bc, bound, allow_unstable) -> float:
    if bc not in _BC_CODE:
        raise ValueError(f"bc must be one of {BOUNDARY_CONDITIONS}, got {bc!r}")
    r = ftcs_ratio(D, dt, dx)
    if r > bound and not allow_unstable:
        raise ValueError(f"FTCS is unstable: r = D dt / dx^2 = {r:.4g} exceeds the bound {bound:g}; "
                         f"reduce dt, or pass allow_unstable=True to watch it blow up")
    return r


# ============================================================================ running kernels
def _unwrap(out, numpy_in: bool):
    if isinstance(out, tuple):
        return tuple(_unwrap(o, numpy_in) for o in out)
    return out.detach().numpy() if numpy_in else out


def _rows(t: torch.Tensor, space_dims: int = 0) -> torch.Tensor:
    """A contiguous view ``(B, n)`` (or ``(B, *space)`` for the stencils)."""
    t = t.contiguous()
    if space_dims == 0:
        return t.reshape(t.shape[0], -1)
    return t.reshape((-1,) + tuple(t.shape[t.ndim - space_dims:]))


def _host_rows(t: torch.Tensor, space_dims: int = 0) -> np.ndarray:
    """:func:`_rows` as a numpy view, reshaped by numpy (a torch reshape costs ~1 us a call)."""
    return _np_rows((t if t.is_contiguous() else t.contiguous()).numpy(), space_dims)


def _np_rows(a: np.ndarray, space_dims: int = 0) -> np.ndarray:
    """A contiguous numpy array viewed as :func:`_rows` does."""
    if space_dims == 0:
        return a.reshape(a.shape[0], -1)
    return a.reshape((-1,) + a.shape[a.ndim - space_dims:])


def _launch(name: str, like: torch.Tensor, args: list, space_dims: int = 0, draws_noise: bool = False,
            per_sample: bool = False):
    """Run kernel ``name`` (CPU or CUDA after ``like``'s device); tensor args are viewed by :func:`_rows`,
    numpy args (index tables) are passed as they are (copied to the GPU for CUDA). ``per_sample``: the
    kernel does a whole trajectory per sample (one CUDA thread a sample; threads on the CPU from 64
    samples up)."""
    if like.device.type == "cuda":
        kc = _cuda_kernels()
        dev = [_rows(a.detach(), space_dims) if isinstance(a, torch.Tensor)
               else torch.as_tensor(np.array(a), device=like.device) if isinstance(a, np.ndarray) else a
               for a in args]
        work = like.shape[0] if per_sample else like.numel()
        index = like.device.index if like.device.index is not None else torch.cuda.current_device()
        kc.launch_on_stream(getattr(kc, name), work, dev, torch.cuda.current_stream(index).cuda_stream, index)
        return
    if like.device.type != "cpu":
        raise RuntimeError(f"the numba backend runs on CPU or CUDA tensors, got device {like.device}")
    host = [_host_rows(a, space_dims) if isinstance(a, torch.Tensor) else a for a in args]
    if _fuses_rows(name, draws_noise):
        host = [a.reshape(1, -1) if isinstance(a, np.ndarray) else a for a in host]
    _cpu_kernels().run(name, host, like.shape[0] * (1 << 13) if per_sample else like.numel(), draws_noise)


_CPU = None


_FORMULAS = None


def _formulas():
    """``minidiff.kernels.formulas`` (numba-free; imported on first use like every kernel module, then
    held here: an import statement in a per-step function costs a microsecond a call)."""
    global _FORMULAS
    if _FORMULAS is None:
        from minidiff.kernels import formulas

        _FORMULAS = formulas
    return _FORMULAS


def _cpu_kernels():
    global _CPU
    if _CPU is None:
        from minidiff.kernels import cpu

        _CPU = cpu
    return _CPU


def _cuda_kernels():
    """``minidiff.kernels.cuda``, or a RuntimeError saying what is missing."""
    try:
        from minidiff.kernels import cuda as kc
    except ImportError as e:  # numba built without CUDA support
        raise RuntimeError("CUDA needs NVIDIA's numba-cuda: pip install -e '.[cuda12]' (or cuda13)") from e
    if not kc.is_available():
        raise RuntimeError("CUDA was requested but numba sees no CUDA GPU (or no driver); "
                           "use CPU tensors, or install numba-cuda with a matching driver")
    return kc


def _seed_key(seed) -> tuple[int, int]:
    """``formulas.seed_key`` (imported on first use: ``import minidiff`` loads no kernel module)."""
    global _seed_key
    from minidiff.kernels.formulas import seed_key as _seed_key

    return _seed_key(seed)


def _seed_args(seed, step):
    k0, k1 = _seed_key(0 if seed is None else seed)
    return [k0, k1, int(step)]


_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _empty(shape, dtype, device) -> torch.Tensor:
    """A fresh contiguous output. On the CPU it comes from numpy, whose allocator asks for
    transparent huge pages on large arrays: first-touch page faults then cost about half what they
    cost in a ``torch.empty`` buffer (4 KB pages), and every kernel writes a fresh output."""
    if torch.device(device).type == "cpu":
        return torch.from_numpy(np.empty(tuple(shape), dtype=_NP_DTYPES[dtype]))
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def _empty_like(x) -> torch.Tensor:
    return _empty(x.shape, x.dtype, x.device)


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The byte range ``[lo, hi)`` that tensor ``t`` can touch (torch strides are never negative)."""
    if t.numel() == 0:
        return 0, 0
    return t.data_ptr(), t.data_ptr() + t.element_size() * (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())))


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return a.device == b.device and a0 < b1 and b0 < a1


def _out(x: torch.Tensor, out, name: str, inputs: dict, in_place_ok: bool = True, taken=(),
         allocate: bool = True):
    """``out`` checked as an output for an update of ``x``: when ``out`` is None, a fresh array (or
    None unless ``allocate``); else a contiguous, writeable array like ``x`` (the first of
    ``inputs``) that is either exactly one of them (in place, when ``in_place_ok``) or shares no
    memory with any of them, nor with the other outputs ``taken``."""
    if out is None:
        return _empty_like(x) if allocate else None
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{name} must be writeable, got a read-only array")
    if isinstance(out, np.ndarray) and not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (the kernels write it in place), got strides {out.strides}")
    if isinstance(out, torch.Tensor) and out.requires_grad:
        raise ValueError(f"{name} must not require grad: the update writes it outside autograd")
    t = _like(x, out, name, ref=next(iter(inputs)))
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernels write it in place), got strides {t.stride()}")
    for other_name, other in inputs.items():
        if other is None or not _overlap(t, other):
            continue
        same = t.data_ptr() == other.data_ptr() and other.is_contiguous()  # shapes are equal (_like)
        if not in_place_ok:
            raise ValueError(f"{name} overlaps {other_name}: the stencil reads neighbours, so its output "
                             f"must not share memory with its input")
        if not same:
            raise ValueError(f"{name} partly overlaps {other_name} (their memory ranges intersect): an output "
                             f"may be exactly an input (an in-place update) but must not share memory with one "
                             f"otherwise")
    for other_name, other in taken:
        if _overlap(t, other):
            raise ValueError(f"{name} must not overlap {other_name}")
    return t


def _result(computed: torch.Tensor, out_t: torch.Tensor | None, out_given, numpy_in: bool):
    """What an update returns: the caller's own ``out`` object when one was given (after copying
    ``computed`` into it unless the kernel already wrote it there), else ``computed``."""
    if out_given is None:
        return _unwrap(computed, numpy_in)
    if computed is not out_t:
        out_t.copy_(computed)
    return out_given


# ============================================================================ noise
def normal(shape, seed: int, step: int = 0, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normals shaped ``(B, ...)``: element ``(b, i)`` (``i`` the flat index within
    sample ``b``) is a pure function of ``(seed, b, i, step)``: Philox4x32-10 (Salmon et al. 2011)
    on the counter ``(i // 4, b, step, 0)`` keyed by the seed, then Box-Muller in float64 rounded
    once to ``dtype``. The same numbers the kernels draw in-kernel for ``seed=`` calls."""
    from ._checks import check_count, check_int, is_int

    if is_int(shape):
        shape = (shape,)
    elif isinstance(shape, (tuple, list, torch.Size)):
        shape = tuple(check_count(s, f"shape[{i}]", low=0) for i, s in enumerate(shape))
    else:  # a string would iterate into its characters, a float would truncate
        raise TypeError(f"shape must be an int or a tuple of ints, got {type(shape).__name__} {shape!r}")
    if len(shape) < 1:
        raise ValueError("shape must have a batch dimension first")
    shape = tuple(check_count(s, "shape", low=0) for s in shape)
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    check_int(seed, "seed")  # None is no seed: normal() has no default stream to fall back on
    _check_step(seed, step)
    device = torch.device(device)
    if device.type == "cuda":
        _cuda_kernels()
    out = _empty(shape, dtype, device)
    if out.numel():
        _launch("normal_fill", out, [out] + _seed_args(seed, step), draws_noise=True)
    return out


def _noise(x, noise, seed, step):
    """The torch path's noise: the given tensor, or :func:`normal` for ``seed``."""
    if noise is not None:
        return noise
    return normal(x.shape, seed, step, dtype=x.dtype, device=x.device)


# ============================================================================ the update driver
# Every update is one call of :func:`_update` with a kernel name, its arrays, its coefficients (from
# ``minidiff.kernels.formulas.*_coefficients``, the same numbers for both backends) and its torch
# reference (a third implementation of the kernel interface: same arrays, same coefficients, eager ops).
# Kernel arguments are always ``(*arrays, [noise], *coefs, [mode, k0, k1, step], *outputs)``.
_NO_NOISE = object()  # the update has no noise argument at all (Heun, the stencils)


def _update(kernel: str, backend, arrays: dict, coefs: tuple, torch_ref, *, noise=_NO_NOISE, seed=None, step=0,
            needs_noise: bool = True, outs=(("out", None),), in_place_ok: bool = True, space_dims: int = 0):
    """The one update driver: resolve the backend, view and check the arrays (the first is ``x``; a
    ``None`` entry stands for ``x`` itself), choose the noise source, check or allocate the outputs, then
    launch the kernel or evaluate ``torch_ref(*arrays, z, *coefs)``, and return what the caller asked
    for (numpy in, numpy out; the caller's ``out`` objects when given)."""
    name = _resolve(backend)
    items = iter(arrays.items())
    x_name, given_x = next(items)
    numpy_in = type(given_x) is np.ndarray
    x = _as_tensor(given_x, x_name)
    ts = [x]
    for n, a in items:
        ts.append(x if a is None else _like(x, a, n, x_name))
    has_noise = noise is not _NO_NOISE
    mode, z = _NOISE_NONE, None
    if has_noise:
        mode, z, seed = _noise_source(x, noise, seed, step, needed=needs_noise, ref=x_name)
    if name == "numba" and x.is_cpu and outs[0][1] is None and (len(outs) == 1 or outs[1][1] is None):
        host = [(t if t.is_contiguous() else t.contiguous()).numpy() for t in ts + ([z] if z is not None else [])]
        return _update_host(kernel, host, has_noise, coefs, mode, seed, step, len(outs), numpy_in, space_dims)
    checked, taken, inputs = [], [], None
    for out_name, given in outs:
        if inputs is None:
            inputs = {n: (None if n != x_name and arrays[n] is None else t) for n, t in zip(arrays, ts)}
            if has_noise:
                inputs["noise"] = z
        o = _out(x, given, out_name, inputs, in_place_ok=in_place_ok, taken=taken, allocate=name == "numba")
        checked.append(o)
        if o is not None:
            taken.append((out_name, o))
    if name == "torch":
        if x.numel() == 0:
            computed = tuple(x.clone() for _ in outs)
        else:
            zt = _noise(x, z, seed, step) if mode != _NOISE_NONE else None
            computed = torch_ref(*ts, zt, *coefs) if has_noise else torch_ref(*ts, *coefs)
            computed = computed if isinstance(computed, tuple) else (computed,)
        results = tuple(_result(c, o, given, numpy_in) for c, o, (_, given) in zip(computed, checked, outs))
    elif x.numel():
        args = ts + ([x if z is None else z] if has_noise else []) + list(coefs)
        if has_noise:
            args += [mode] + _seed_args(seed, step)
        _launch(kernel, x, args + checked, space_dims=space_dims, draws_noise=mode == _NOISE_PHILOX)
        results = tuple(_result(o, o, given, numpy_in) for o, (_, given) in zip(checked, outs))
    else:
        results = tuple(_result(o, o, given, numpy_in) for o, (_, given) in zip(checked, outs))
    return results if len(results) > 1 else results[0]


def _update_host(kernel, host, has_noise, coefs, mode, seed, step, n_out, numpy_in, space_dims):
    """:func:`_update` for the CPU kernels with fresh outputs (the course's call): everything is already
    checked and ``host`` holds the contiguous numpy views of the arrays (the noise array last when one is
    read), so this is straight-line work -- outputs from ``np.empty`` (see :func:`_empty`), the kernel (or
    its serial twin, :func:`minidiff.kernels.cpu.run`) and the results wrapped once (kernels/BENCHMARKS.md
    has the per-call cost)."""
    x = host[0]
    shape, size, dtype = x.shape, x.size, x.dtype
    fresh = (np.empty(shape, dtype),) if n_out == 1 else (np.empty(shape, dtype), np.empty(shape, dtype))
    if size:
        if space_dims:
            args = [_np_rows(a, space_dims) for a in host]
            outs = [_np_rows(o, space_dims) for o in fresh]
        else:
            # Rows fused into one when every sample gets the same coefficients and no per-sample Philox
            # counter is needed: the kernel then walks one contiguous range (no views per short row).
            rows = (1, size) if _fuses_rows(kernel, mode == _NOISE_PHILOX) else (shape[0], size // shape[0])
            if kernel == "q_sample" and mode != _NOISE_PHILOX and rows[0] >= 64:
                t = coefs[0]  # per-sample t_index: one row when every sample has the same one
                if t[0] == t[-1] and (t == t[0]).all():
                    rows, coefs = (1, size), (t[:1],) + tuple(coefs[1:])
            args = [a.reshape(rows) for a in host]
            outs = [o.reshape(rows) for o in fresh]
        if has_noise and mode != _NOISE_GIVEN:
            args.append(args[0])  # no noise array: the kernel ignores this one (mode NOISE_NONE / PHILOX)
        args += coefs
        if has_noise:
            k0, k1 = _seed_key(seed) if mode == _NOISE_PHILOX else (0, 0)
            args += (mode, k0, k1, int(step))
        args += outs
        (_CPU or _cpu_kernels()).run(kernel, args, size, mode == _NOISE_PHILOX)
    if numpy_in:
        return fresh[0] if n_out == 1 else fresh
    return torch.from_numpy(fresh[0]) if n_out == 1 else (torch.from_numpy(fresh[0]), torch.from_numpy(fresh[1]))


_UNIFORM = frozenset(("ddpm", "ddim", "em", "heun"))  # kernels whose coefficients are the same for every sample


def _fuses_rows(kernel: str, draws_noise: bool) -> bool:
    """Whether a CPU kernel may walk its arrays as one row ``(1, B n)`` instead of ``(B, n)`` (both launch
    paths): its coefficients are the same for every sample and no per-sample Philox counter is needed, so
    the result is bitwise the same without a view per short row."""
    return kernel in _UNIFORM and not draws_noise


_COEFS: dict = {}  # id(schedule) -> (weak reference to it, {key: coefficients}): the tables are read-only


def _schedule_coefs(schedule, key, compute):
    """``compute()`` once per ``(schedule, key)``: a step's coefficients read five schedule tables,
    two of them recomputed by the Schedule on every access (``alpha_bar_prev``, ``posterior_variance``).
    Keyed by ``id`` with a weak reference that removes the entry when the schedule dies (a
    ``WeakKeyDictionary`` lookup builds a new reference on every call: a microsecond a step)."""
    entry = _COEFS.get(id(schedule))
    if entry is None or entry[0]() is not schedule:
        try:
            ref = weakref.ref(schedule, lambda _, i=id(schedule): _COEFS.pop(i, None))
        except TypeError:  # not weak-referenceable: no cache
            return compute()
        entry = _COEFS[id(schedule)] = (ref, {})
    per = entry[1]
    value = per.get(key)
    if value is None:
        value = per[key] = compute()
    return value


# ============================================================================ diffusion updates
def _gather(table, t_index, like: torch.Tensor) -> torch.Tensor:
    """``table[t_index]`` per sample as a tensor broadcasting against ``like`` ``(B, ...)``."""
    v = torch.as_tensor(np.asarray(table)[t_index], dtype=like.dtype, device=like.device)
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _q_sample_torch(x0, z, t_index, sqrt_ab, sqrt_1mab):
    return _gather(sqrt_ab, t_index, x0) * x0 + _gather(sqrt_1mab, t_index, x0) * z


def q_sample(x0, t_index, noise, schedule, *, seed=None, step=0, out=None, backend=None):
    """``x_t = sqrt(ab[t_index]) x0 + sqrt(1-ab[t_index]) eps`` with per-sample ``t_index`` (B,) int64
    (Ho et al. 2020, eq. 4). ``noise`` may be a tensor, or an int used as ``seed``. ``out``: write
    the result there (see the module notes) and return it."""
    if isinstance(noise, (int, np.integer)):
        noise, seed = None, int(noise)
    _resolve(backend)
    x0_t = _as_tensor(x0, "x0")
    t_vec = _t_vector(t_index, x0_t.shape[0], schedule)
    tables = _schedule_coefs(schedule, ("q_sample",), lambda: (schedule.sqrt_alpha_bar, schedule.sqrt_one_minus_alpha_bar))
    return _update("q_sample", backend, {"x0": x0}, (t_vec,) + tables, _q_sample_torch, noise=noise, seed=seed, step=step, outs=(("out", out),))


def _clip_value(clip_x0) -> float:
    """``clip_x0`` as the kernels' clamp bound (``inf`` for None); a real number > 0 else an error."""
    if clip_x0 is None:
        return math.inf
    if isinstance(clip_x0, bool) or not isinstance(clip_x0, (int, float, np.integer, np.floating)):
        raise TypeError(f"clip_x0 must be a real number > 0 or None, got {type(clip_x0).__name__}")
    c = float(clip_x0)
    if not c > 0:
        raise ValueError(f"clip_x0 must be > 0 (or None), got {clip_x0}")
    return c


def _x0_torch(x, eps, inv_sa, s1, c):
    """``x0_hat = clip((x - sqrt(1-ab) eps) / sqrt(ab), c)`` (``formulas.x0_from_eps``)."""
    x0 = (x - s1 * eps) * inv_sa
    return x0 if math.isinf(c) else x0.clamp(-c, c)


def _ddpm_torch(x, eps, z, inv_sa, s1, c, cx0, cx, std):
    """``formulas.ddpm_elem`` in eager torch."""
    x0 = _x0_torch(x, eps, inv_sa, s1, c)
    mean = cx0 * x0 + cx * x
    return (mean if z is None or std == 0 else mean + std * z), x0


def ddpm_step(x, eps, t_index: int, schedule, *, noise=None, seed=None, step=0, clip_x0=None,
              out=None, x0_out=None, backend=None):
    """One ancestral step (Ho et al. 2020, Alg. 2, in posterior-mean form eq. 7).
    Returns ``(x_prev, x0_hat)``, written into ``out`` / ``x0_out`` when given. At ``t_index == 0``
    no noise is added."""
    _resolve(backend)
    t_index = _t_scalar(t_index, schedule)
    c = _clip_value(clip_x0)
    coefs = _schedule_coefs(schedule, ("ddpm", t_index), lambda: _formulas().ddpm_coefficients(
        schedule.alpha_bar[t_index], schedule.alpha_bar_prev[t_index], schedule.betas[t_index],
        schedule.alphas[t_index], schedule.posterior_variance[t_index], add_noise=t_index > 0))
    inv_sa, s1, cx0, cx, std = coefs
    return _update("ddpm", backend, {"x": x, "eps": eps}, (inv_sa, s1, c, cx0, cx, std), _ddpm_torch,
                   noise=noise, seed=seed, step=step, needs_noise=t_index > 0,
                   outs=(("out", out), ("x0_out", x0_out)))


def _ddim_torch(x, eps, z, sa, inv_sa, s1, inv_s1, c, recompute_eps, sap, cdir, ddim_sigma):
    """``formulas.ddim_elem`` in eager torch."""
    x0 = _x0_torch(x, eps, inv_sa, s1, c)
    e = (x - sa * x0) * inv_s1 if recompute_eps else eps
    out = sap * x0 + cdir * e
    return (out if z is None or ddim_sigma == 0 else out + ddim_sigma * z), x0


def ddim_step(x, eps, t_index: int, t_index_prev: int, schedule, *, eta=0.0, noise=None, seed=None,
              step=0, clip_x0=None, out=None, x0_out=None, backend=None):
    """One DDIM step from ``t_index`` to ``t_index_prev`` (``-1`` = to data) (Song et al. 2021b, eq. 12;
    fresh-noise std ``ddim_sigma(eta)`` of eq. 16). Returns ``(x_prev, x0_hat)``, written into ``out`` /
    ``x0_out`` when given."""
    _resolve(backend)
    t_index = _t_scalar(t_index, schedule)
    t_index_prev = _t_scalar(t_index_prev, schedule, "t_index_prev", low=-1)
    if not t_index_prev < t_index:
        raise ValueError(f"t_index_prev must be < t_index, got {t_index_prev} >= {t_index}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    coefs = _schedule_coefs(schedule, ("ddim", t_index, t_index_prev, float(eta)), lambda: _formulas().ddim_coefficients(
        schedule.alpha_bar[t_index], 1.0 if t_index_prev < 0 else float(schedule.alpha_bar[t_index_prev]), eta))
    sa, inv_sa, s1, inv_s1, sap, cdir, ddim_sigma = coefs
    return _update("ddim", backend, {"x": x, "eps": eps},
                   (sa, inv_sa, s1, inv_s1, _clip_value(clip_x0), clip_x0 is not None, sap, cdir, ddim_sigma),
                   _ddim_torch, noise=noise, seed=seed, step=step, needs_noise=ddim_sigma > 0,
                   outs=(("out", out), ("x0_out", x0_out)))


def _em_torch(x, score, z, cx, cs, cz):
    """``formulas.em_elem`` in eager torch."""
    y = cx * x + cs * score
    return y if z is None or cz == 0 else y + cz * z


def _em(x, score, coefs, noise, seed, step, needed, backend, out):
    """Euler-Maruyama-shaped updates ``cx x + cs score + cz z`` (``score=None``: no score term)."""
    return _update("em", backend, {"x": x, "score": score}, coefs, _em_torch, noise=noise, seed=seed, step=step,
                   needs_noise=needed, outs=(("out", out),))


def langevin_step(x, score, step_size: float, *, noise=None, seed=None, step=0, out=None, backend=None):
    """``x + (step_size/2) score + sqrt(step_size) z`` (Song & Ermon 2019, Alg. 1)."""
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    return _em(x, score, _formulas().langevin_coefficients(step_size), noise, seed, step, True, backend, out)


def reverse_sde_step(x, score, *, drift_coef: float, diffusion: float, dt: float, noise=None,
                     seed=None, step=0, out=None, backend=None):
    """Euler-Maruyama step of the reverse SDE ``dx = [f - g^2 score] dt + g dw`` from ``t`` to ``t - dt``
    (Anderson 1982; Song et al. 2021a, eq. 6), with linear drift ``f(x, t) = drift_coef * x``:
    ``x - (drift_coef x - g^2 score) dt + g sqrt(dt) z``."""
    if not dt >= 0:
        raise ValueError(f"dt must be >= 0, got {dt}")
    coefs = _formulas().reverse_sde_coefficients(drift_coef, diffusion, dt)
    return _em(x, score, coefs, noise, seed, step, True, backend, out)


def pf_ode_euler_step(x, score, *, drift_coef: float, diffusion: float, dt: float, out=None, backend=None):
    """Euler step of the probability-flow ODE ``dx/dt = f - g^2 score / 2`` from ``t`` to ``t - dt``
    (Song et al. 2021a, eq. 13)."""
    coefs = _formulas().pf_ode_euler_coefficients(drift_coef, diffusion, dt)
    return _em(x, score, coefs, None, None, 0, False, backend, out)


def _heun_torch(x, score, x_euler, score_euler, cx, cs, cxe, cse):
    """``formulas.heun_elem`` in eager torch."""
    return cx * x + cs * score + cxe * x_euler + cse * score_euler


def pf_ode_heun_step(x, score, x_euler, score_euler, *, drift_coef: float, diffusion: float,
                     drift_coef_next: float, diffusion_next: float, dt: float, out=None, backend=None):
    """Heun (trapezoidal) correction for the probability-flow ODE (Karras et al. 2022, Alg. 1, lines 9-11):
    ``x - dt/2 (d(x, t) + d(x_euler, t - dt))`` with ``d = f - g^2 score / 2``."""
    coefs = _formulas().heun_coefficients(drift_coef, diffusion, drift_coef_next, diffusion_next, dt)
    return _update("heun", backend, {"x": x, "score": score, "x_euler": x_euler, "score_euler": score_euler},
                   coefs, _heun_torch, outs=(("out", out),))


# ============================================================================ exact-score trajectories
def gm_trajectories(kernel: str, x: torch.Tensor, tables: list, seed: int | None = None) -> torch.Tensor:
    """Run the whole-trajectory kernel ``kernel`` (``"eps_trajectories"``, ``"score_trajectories"`` or
    ``"pc_trajectories"``, see ``kernels/trajectories.py``) on ``x`` ``(B, d)`` with the host ``tables`` that
    :mod:`minidiff.trajectories` builds (mixture means first); a fresh ``(B, d)`` result in ``x``'s dtype.
    Noise keyed by ``seed`` as everywhere here. Use :mod:`minidiff.trajectories`, which validates."""
    if kernel not in ("eps_trajectories", "score_trajectories", "pc_trajectories"):
        raise ValueError(f"kernel must be 'eps_trajectories', 'score_trajectories' or 'pc_trajectories', "
                         f"got {kernel!r}")
    x = _as_tensor(x, "x")
    out = _empty_like(x)
    if x.numel():
        _launch(kernel, x, [x] + list(tables) + _seed_args(seed, 0)[:2] + [out], draws_noise=True,
                per_sample=True)
    return out


# ============================================================================ physics
def _neighbours(u, dim: int, bc: str):
    """``(u[i-1], u[i+1])`` along ``dim`` with periodic wrap or zero-flux ghost cells."""
    n = u.shape[dim]
    first, last = u.narrow(dim, 0, 1), u.narrow(dim, n - 1, 1)
    ghost_lo, ghost_hi = (last, first) if bc == "periodic" else (first, last)
    left = torch.cat([ghost_lo, u.narrow(dim, 0, n - 1)], dim)
    right = torch.cat([u.narrow(dim, 1, n - 1), ghost_hi], dim)
    return left, right


def _hold_boundary(new, u, dims):
    """Dirichlet: boundary nodes keep their values."""
    for d in dims:
        idx = torch.tensor([0, u.shape[d] - 1], device=u.device)
        new.index_copy_(d, idx, u.index_select(d, idx))
    return new


def _ftcs1d_torch(u, r, bc_code):
    bc = BOUNDARY_CONDITIONS[bc_code]
    left, right = _neighbours(u, -1, bc)
    new = u + r * (left - 2 * u + right)
    return _hold_boundary(new, u, [-1 % u.ndim]) if bc == "dirichlet" else new


def _ftcs2d_torch(u, r, bc_code):
    bc = BOUNDARY_CONDITIONS[bc_code]
    (l, rt), (up, dn) = _neighbours(u, u.ndim - 1, bc), _neighbours(u, u.ndim - 2, bc)
    new = u + r * (l + rt + up + dn - 4 * u)
    return _hold_boundary(new, u, [u.ndim - 2, u.ndim - 1]) if bc == "dirichlet" else new


def ftcs_step_1d(u, D: float, dt: float, dx: float, *, bc: str = "periodic", allow_unstable: bool = False,
                 out=None, backend=None):
    """Explicit (FTCS) step of ``u_t = D u_xx`` along the last axis: ``u + r (u_{i-1} - 2 u_i + u_{i+1})``,
    ``r = D dt/dx^2``. Stable only for ``r <= 1/2``: larger ``r`` raises ValueError unless
    ``allow_unstable=True``. ``bc``: ``"periodic"``, ``"dirichlet"`` (end nodes held fixed) or
    ``"neumann"`` (zero flux: ghost cells copy the end nodes, so ``sum(u)`` is conserved).
    ``u``: ``(B, N)`` (any leading axes are batch)."""
    _resolve(backend)
    _as_tensor(u, "u")
    r = _check_stencil(D, dt, dx, bc, 0.5, allow_unstable)
    return _update("ftcs1d", backend, {"u": u}, (r, _BC_CODE[bc]), _ftcs1d_torch, outs=(("out", out),),
                   in_place_ok=False, space_dims=1)


def ftcs_step_2d(u, D: float, dt: float, dx: float, *, bc: str = "periodic", allow_unstable: bool = False,
                 out=None, backend=None):
    """Explicit 5-point step of ``u_t = D (u_xx + u_yy)`` on the last two axes, stable for
    ``r = D dt/dx^2 <= 1/4`` (larger raises ValueError unless ``allow_unstable=True``).
    ``u``: ``(B, H, W)``; ``bc`` as in :func:`ftcs_step_1d`, on all four sides."""
    _resolve(backend)
    if _as_tensor(u, "u").ndim < 2:
        raise ValueError(f"u must have at least 2 dims (H, W), got shape {tuple(np.shape(u))}")
    r = _check_stencil(D, dt, dx, bc, 0.25, allow_unstable)
    return _update("ftcs2d", backend, {"u": u}, (r, _BC_CODE[bc]), _ftcs2d_torch, outs=(("out", out),),
                   in_place_ok=False, space_dims=2)


def walker_step(x, D: float, dt: float, *, drift_coef: float = 0.0, noise=None, seed=None, step=0,
                out=None, backend=None):
    """Brownian walkers (Ornstein-Uhlenbeck when ``drift_coef != 0``), Euler-Maruyama:
    ``x + drift_coef x dt + sqrt(2 D dt) z``. ``x``: ``(n_walkers, d)``."""
    if not (D >= 0 and dt >= 0):
        raise ValueError(f"D and dt must be >= 0, got D={D}, dt={dt}")
    return _em(x, None, _formulas().walker_coefficients(D, dt, drift_coef), noise, seed, step, True, backend, out)


# ============================================================================ categorical draws (discrete diffusion)
def categorical(probs, *, seed: int, step: int = 0, backend=None) -> torch.Tensor:
    """One draw per row from ``probs`` ``(..., K)`` (non-negative, each row with positive mass; rows
    need not sum to 1), as int64 ``(...)``: the Gumbel-max trick ``argmax_k log p_k + G_k`` with
    ``G`` from Philox on ``(seed, row, k, step)`` (:mod:`minidiff.kernels.categorical`), so the
    ``"torch"`` reference (eager ops on the same noise) and the kernels give the same tokens.
    Categories with ``p = 0`` are never drawn."""
    name, numpy_in, p = _resolve(backend), isinstance(probs, np.ndarray), _as_tensor(probs, "probs")
    if seed is None:
        raise ValueError("seed must be an int (categorical draws always use counter-based noise)")
    _check_step(seed, step)
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"probs must have K >= 1 categories on its last axis, got shape {tuple(p.shape)}")
    rows = p.reshape(-1, p.shape[-1]).contiguous()
    if rows.numel() and not (bool(torch.isfinite(rows).all()) and bool((rows >= 0).all())
                             and bool((rows.sum(-1) > 0).all())):
        raise ValueError("probs must be finite and non-negative with positive mass in every row")
    k0, k1, step = _seed_args(seed, step)
    out = torch.empty(rows.shape[0], dtype=torch.int64, device=p.device)
    if rows.shape[0]:
        from minidiff.kernels import categorical as kcat

        if name == "torch":
            g = torch.from_numpy(np.empty(tuple(rows.shape), dtype=np.float64))
            kcat.gumbel_fill(g.numpy(), k0, k1, step)
            logp = torch.where(rows > 0, torch.log(rows.double().clamp_min(1e-300)), -torch.inf)
            out = (logp + g.to(p.device)).argmax(-1)
        elif p.device.type == "cuda":
            kc = _cuda_kernels()
            index = p.device.index if p.device.index is not None else torch.cuda.current_device()
            kc.launch_on_stream(kcat.cuda_kernels()["categorical"], rows.shape[0], [rows, k0, k1, step, out],
                                torch.cuda.current_stream(index).cuda_stream, index)
        else:
            _cpu_kernels().run(kcat.categorical, [rows.numpy(), k0, k1, step, out.numpy()], rows.numel(), True)
    out = out.reshape(p.shape[:-1])
    return out.numpy() if numpy_in else out
