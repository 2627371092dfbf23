"""One name per noise coordinate (the glossary in minidiff's docstring): an integer noise index is
``t_index``, never ``t`` (continuous time). Checked on the syntax tree: no ``t`` runs over a ``range``
and no ``t`` indexes a schedule table. backend.py, kernels/ and their tests are renamed with the kernel
restructuring (engineer h22's issue) and are not checked here yet."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"alpha_bar", "alpha_bar_prev", "betas", "alphas", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar",
          "posterior_variance", "sigma", "snr"}
NOT_YET = {"minidiff/backend.py", "tests/naive.py", "tests/test_kernels.py", "tests/test_kernels_cuda.py",
           "tests/test_backend.py"}
FILES = [p for p in sorted((ROOT / "minidiff").rglob("*.py")) + sorted((ROOT / "tests").glob("*.py"))
         if str(p.relative_to(ROOT)) not in NOT_YET]


def _integer_t_uses(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name) \
                and node.target.id == "t" and isinstance(node.iter, ast.Call) \
                and getattr(node.iter.func, "id", None) in ("range", "reversed"):
            yield node.iter.lineno if hasattr(node.iter, "lineno") else 0, "t runs over a range"
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name) and node.slice.id == "t" \
                and isinstance(node.value, ast.Attribute) and node.value.attr in TABLES:
            yield node.lineno, f"t indexes the table {node.value.attr}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_integer_noise_indices_are_called_t_index(path):
    bad = list(_integer_t_uses(ast.parse(path.read_text(encoding="utf-8"))))
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(f"line {n}: {why}" for n, why in bad)


def test_the_check_finds_an_integer_t():
    src = "for t in reversed(range(T)):\n    ab = schedule.alpha_bar[t]\n"
    assert [why for _, why in _integer_t_uses(ast.parse(src))] == ["t runs over a range",
                                                                   "t indexes the table alpha_bar"]
