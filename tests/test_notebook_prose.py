"""No hand-typed result in prose: every decimal number in a notebook's Markdown must appear in that notebook's
outputs (printed by the cell that computed it, or rendered by ``minidiff.claims.report``), or be a cited constant.

Cited constants (paper values, hyper-parameters, analytic values derived in the text) are listed per notebook in
its own metadata, each with the reason it may stand in prose::

    "metadata": {"minidiff": {"cited_constants": {"0.02": "beta_T of Ho et al. 2020's linear schedule"}}}

so the list lives beside the prose it excuses and cannot go stale unnoticed: an entry whose number no longer
appears in the Markdown fails the test too. Numbers that are references rather than results (``Sec. 3.2``,
``eq. 14``, ``Table 1``), and numbers inside code (fenced blocks or inline backticks), are not results.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))

DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?!\w)(?!\.\d)")  # "0.02." at a sentence end counts
FENCED = re.compile(r"```.*?```", re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# "Sec. 3.2", "Section 4.3", "eq. 14.1", "Table 1.2", "Alg. 2.1", "Fig. 3.1", "Python 3.11", "v0.11": references.
REFERENCE = re.compile(r"\b(?:Sec(?:tion)?s?\.?|[Ee]qs?\.|[Ee]quations?|Tables?|Alg(?:orithm)?s?\.?|Figs?\.?|"
                       r"Figures?|Appendix|Python|version|v)\s*\(?\d+(?:\.\d+)+")


def _text(src) -> str:
    return "".join(src) if isinstance(src, list) else (src or "")


def output_text(nb: dict) -> str:
    """Everything a reader sees as output: stream text, plain/Markdown/HTML results, error text."""
    parts = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            parts.append(_text(out.get("text", "")))
            data = out.get("data", {})
            for key in ("text/plain", "text/markdown", "text/html", "text/latex"):
                parts.append(_text(data.get(key, "")))
    return "\n".join(parts)


def prose_decimals(markdown: str) -> list[str]:
    """Decimal numbers of a Markdown cell that could be results (code and references removed)."""
    text = FENCED.sub(" ", markdown)
    text = INLINE_CODE.sub(" ", text)
    text = REFERENCE.sub(" ", text)
    return DECIMAL.findall(text)


def in_outputs(number: str, outputs: str) -> bool:
    """``number`` appears in ``outputs`` as a whole number (``0.5`` does not match inside ``0.55`` or ``10.5``)."""
    return re.search(r"(?<![\d.])" + re.escape(number) + r"(?!\d)", outputs) is not None


def lonely_numbers(nb: dict) -> tuple[list[tuple[int, str]], list[str]]:
    """``(violations, stale_allowlist)``: (cell index, number) pairs found in no output and not cited, and
    cited constants that no longer appear in the Markdown."""
    cited = nb.get("metadata", {}).get("minidiff", {}).get("cited_constants", {})
    outputs = output_text(nb)
    seen, bad = set(), []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "markdown":
            continue
        for num in prose_decimals(_text(cell.get("source", ""))):
            seen.add(num)
            if num not in cited and not in_outputs(num, outputs):
                bad.append((i, num))
    stale = sorted(set(cited) - seen)
    return bad, stale


def test_detector_catches_a_stale_number_and_accepts_computed_ones():
    md = {"cell_type": "markdown", "source": "DDPM-1000 reaches 18.8; Heun 14.2 (Sec. 3.2; `x = 0.5`); beta 0.02."}
    code = {"cell_type": "code", "source": "", "outputs": [{"output_type": "stream", "text": "Heun 14.2\n"}]}
    nb = {"cells": [md, code], "metadata": {"minidiff": {"cited_constants": {"0.02": "Ho et al. 2020", "0.7": "gone"}}}}
    bad, stale = lonely_numbers(nb)
    assert bad == [(0, "18.8")]
    assert stale == ["0.7"]
    assert not in_outputs("0.5", "0.55 10.5") and in_outputs("0.5", "ratio 0.5, ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_numbers_are_computed_or_cited(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and _text(c.get("source", "")).strip()]
    assert any(c.get("outputs") for c in code), f"{path.name} is committed without outputs (run `make course`)"
    cited = nb.get("metadata", {}).get("minidiff", {}).get("cited_constants", {})
    assert all(isinstance(v, str) and v.strip() for v in cited.values()), "every cited constant needs its reason"
    bad, stale = lonely_numbers(nb)
    assert not bad, (f"{path.name}: decimal numbers in Markdown found in no output and not cited "
                     f"(print them from the computing cell, use minidiff.claims, or cite them in the notebook's "
                     f"metadata.minidiff.cited_constants): " + ", ".join(f"cell {i}: {n}" for i, n in bad))
    assert not stale, f"{path.name}: cited constants no longer in the Markdown: {stale}"
