"""Citations: every "Author et al. YEAR[a|b]", "Author & Author YEAR" and written-out author list in the
package's and the kernels' source (docstrings and comments) and in the notebooks' Markdown resolves to
exactly one entry of minidiff.bibliography, and none is ambiguous (a bare year where the bibliography
holds a/b papers of that first author)."""
import glob
import json
from pathlib import Path

import pytest

from minidiff import bibliography as B

ROOT = Path(__file__).resolve().parents[1]

# Notebook citations waiting for the rename map (/work/notes/h21_renames.md, "Notebook edits"): the
# notebooks are edited by the integrator after the merge. Delete each entry when its edit is applied
# (test_awaiting_entries_are_still_needed fails once an entry has become stale).
AWAITING: dict = {}


def _sources():
    for f in sorted(glob.glob(str(ROOT / "minidiff/**/*.py"), recursive=True)
                    + glob.glob(str(ROOT / "kernels/**/*.py"), recursive=True)):
        if not f.endswith("bibliography.py"):  # the table itself
            yield str(Path(f).relative_to(ROOT)), Path(f).read_text(encoding="utf-8")
    for f in sorted(glob.glob(str(ROOT / "notebooks/*.ipynb"))):
        nb = json.loads(Path(f).read_text(encoding="utf-8"))
        md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        yield str(Path(f).relative_to(ROOT)), md


def _unresolved():
    bad = {}
    for where, text in _sources():
        for key in B.find_citations(text):
            try:
                B.resolve(key)
            except KeyError as e:
                bad.setdefault((where, key), [0, str(e)])[0] += 1
    return bad


def test_the_table_is_consistent():
    assert B.check_table() == []
    assert len(B.REFERENCES) >= 60
    for key, ref in B.REFERENCES.items():
        assert ref.title and ref.venue and ref.link.startswith("https://"), key


def test_every_citation_resolves_to_one_entry():
    bad = {k: v for k, v in _unresolved().items() if k not in AWAITING}
    assert not bad, "\n".join(f"{w}: {msg} ({n}x)" for (w, _), (n, msg) in sorted(bad.items()))


def test_awaiting_entries_are_still_needed():
    found = _unresolved()
    stale = {k: n for k, n in AWAITING.items() if found.get(k, [0])[0] != n}
    assert not stale, f"update AWAITING in tests/test_citations.py (applied or changed): {stale}"


def test_the_finder_reads_every_form_and_flags_ambiguity():
    text = ("Ho et al. 2020, eq. 14; Salimans &\n    Ho 2022; Brown, Cai & DasGupta 2001; Song et al.\n"
            "2021b; # Karras et al. 2022\n# Alg. 2; DDPM 2020 is no citation")
    assert B.find_citations(text) == ["Ho et al. 2020", "Salimans & Ho 2022", "Brown et al. 2001",
                                      "Song et al. 2021b", "Karras et al. 2022"]
    assert B.resolve("Song et al. 2021b").title == "Denoising Diffusion Implicit Models"
    assert "Score-Based" in B.resolve("Song et al. 2021a").title
    with pytest.raises(KeyError, match="ambiguous"):
        B.resolve("Song et al. 2021")
    with pytest.raises(KeyError, match="not in minidiff.bibliography"):
        B.resolve("Nobody et al. 1999")
