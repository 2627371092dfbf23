"""minidiff.kernels: the compiled-kernel core (installed from the top-level ``kernels/`` folder).

Only :mod:`minidiff.backend` imports from here, inside functions, so ``import minidiff`` stays fast.
"""
