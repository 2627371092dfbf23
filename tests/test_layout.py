"""The README's layout section matches the tree: every top-level folder, every module of minidiff/,
minidiff/metrics/ and kernels/ is named there (a new module adds its name to the section)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def _tracked_top_level() -> set[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {p.split("/", 1)[0] for p in out.splitlines() if "/" in p and not p.startswith(".")}


def test_every_folder_and_module_is_in_the_layout_section():
    block = _layout_block()
    words = set(re.findall(r"[\w.]+", block))
    missing = [d + "/" for d in sorted(_tracked_top_level()) if d + "/" not in block]
    for folder in ("minidiff", "minidiff/metrics", "kernels"):
        for p in sorted((ROOT / folder).glob("*.py")):
            if p.stem not in ("__init__", "__main__") and p.stem not in words and p.name not in words:
                missing.append(f"{folder}/{p.name}")
    assert not missing, f"README.md's layout section does not name {missing}"
