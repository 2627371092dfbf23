"""Execute the course and write down how long it took: the run times a reader sees are measured, never typed.

``make course`` calls ``python scripts/run_course.py execute``: every notebook runs top to bottom from a fresh kernel,
one at a time, in full mode, with its outputs written back in place; then each runs once more in fast mode
(``MINIDIFF_FAST=1``, what CI runs; outputs discarded). The wall times go to ``notebooks/runtimes.json`` with the
machine and its load, and ``python scripts/run_course.py write`` (also run by ``execute``) puts them into each
notebook's "**Run time**" line and into the README's course map. ``tests/test_runtimes.py`` checks that the headers
and the README say what ``runtimes.json`` says. ``write`` also puts a "**Players**" note into the first cell of every
notebook with a step-through player: what JupyterLab shows when the notebook is opened without running it, and the
rendered page where its players play with no kernel (:func:`player_note`; checked by tests/test_browser.py).

    python scripts/run_course.py execute [NOTEBOOK ...]   # default: every notebooks/NN_*.ipynb
    python scripts/run_course.py write                    # re-render headers, players notes and README
    python scripts/run_course.py notes [NOTEBOOK ...]     # only the players notes
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUNTIMES = NOTEBOOKS / "runtimes.json"
README = ROOT / "README.md"
RUNTIME_LINE = re.compile(r"^(\*\*Run time\*\*|Run time:).*$", re.M)
PLAYER_NOTE_LINE = re.compile(r"^\*\*Players\*\* \(opened without running\).*$", re.M)
PLAYER_CALL = re.compile(r"\b(ChainPlayer|ParameterPlayer)\(")   # as tests/test_browser.py finds player notebooks


def course_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def human(seconds: float) -> str:
    """``7 s``, ``45 s``, ``1 min 10 s``, ``3 min``: rounded to what a reader plans with."""
    s = int(round(seconds))
    if s < 60:
        return f"{max(s, 1)} s"
    m, r = divmod(int(5 * round(s / 5)), 60)
    return f"{m} min" + (f" {r} s" if r else "")


def header_line(entry: dict) -> str:
    how = ("two notebooks at a time, one thread each" if entry.get("jobs", 1) > 1 else "one notebook at a time")
    return (f"**Run time** (measured by `make course`, {how}, on {entry['machine']}): "
            f"{human(entry['fast_s'])} in fast mode (`MINIDIFF_FAST=1`, what the tests run), "
            f"{human(entry['full_s'])} in full mode (the committed outputs).")


def readme_cell(entry: dict) -> str:
    return f"{human(entry['fast_s'])} / {human(entry['full_s'])}"


def machine() -> str:
    model = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model})"


def _execute(path: Path, fast: bool, write: bool, store_widget_state: bool) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    run = nb if write else copy.deepcopy(nb)
    os.environ["MINIDIFF_FAST"] = "1" if fast else "0"   # the kernel inherits this process's environment
    client = NotebookClient(run, timeout=1800, kernel_name="python3", store_widget_state=store_widget_state,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    if write:
        nbformat.write(run, path)
    return elapsed


def _measure(path: Path, store_widget_state: bool, jobs: int) -> dict:
    if jobs > 1:  # several notebooks side by side on few cores: one thread each (see design notes)
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[k] = "1"
    load = os.getloadavg()[0]
    full = _execute(path, fast=False, write=True, store_widget_state=store_widget_state)
    fast = _execute(path, fast=True, write=False, store_widget_state=False)
    entry = {"full_s": round(full, 1), "fast_s": round(fast, 1), "machine": machine(), "jobs": jobs,
             "load_before": round(load, 2), "date": _dt.date.today().isoformat()}
    print(f"{path.name}: full {full:.1f} s, fast {fast:.1f} s (load before {load:.2f}, {jobs} at a time)", flush=True)
    return entry


def execute(paths: list[Path], *, store_widget_state: bool, jobs: int = 1) -> None:
    """Run ``paths`` (``jobs`` at a time, each in its own process) and record their times."""
    from concurrent.futures import ProcessPoolExecutor

    table = json.loads(RUNTIMES.read_text()) if RUNTIMES.exists() else {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {path.name: pool.submit(_measure, path, store_widget_state, jobs) for path in paths}
        for name, fut in futures.items():
            table[name] = fut.result()
            RUNTIMES.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    write()


def _put_line(nb, path: Path, pattern: re.Pattern, line: str) -> bool:
    """Put ``line`` in the first cell of ``nb`` (replacing the match of ``pattern``, else appended) and write
    ``nb`` to ``path``; False when the cell already says it."""
    first = nb.cells[0]
    if pattern.search(first.source):
        new = pattern.sub(lambda _: line, first.source, count=1)
    else:
        new = first.source.rstrip("\n") + "\n\n" + line
    if new == first.source:
        return False
    first.source = new
    import nbformat

    nbformat.write(nb, path)
    return True


def _set_header(path: Path, entry: dict) -> bool:
    import nbformat

    return _put_line(nbformat.read(path, as_version=4), path, RUNTIME_LINE, header_line(entry))


def player_note(path: Path) -> str:
    """What a reader who opens the notebook without running it gets, and where the players play without a kernel.
    tests/test_browser.py checks both halves in JupyterLab and tests/test_site_browser.py the site."""
    return ("**Players** (opened without running): JupyterLab 4 with ipywidgets 8 does not rebuild widgets from the "
            "widget state saved in a notebook (jupyterlab/jupyterlab#15361), so until its cell runs each step-through "
            "player shows as a static strip of frames; once run, it keeps playing after the kernel is shut down. To play "
            f"them without running anything, open this chapter in the rendered course, `site/{path.stem}.html` "
            "(`make site`): it needs no kernel and no network.")


def has_player(nb) -> bool:
    return any(c.cell_type == "code" and PLAYER_CALL.search(c.source) for c in nb.cells)


def _set_player_note(path: Path) -> bool:
    """Put :func:`player_note` in the first cell of a notebook with a player (replaced if there, else appended)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return has_player(nb) and _put_line(nb, path, PLAYER_NOTE_LINE, player_note(path))


def write_player_notes(paths: list[Path] | None = None) -> None:
    for path in paths or course_notebooks():
        if _set_player_note(path):
            print(f"updated the players note of {path.name}")


def write() -> None:
    """Headers and README course map from runtimes.json (notebooks not yet measured are left as they are)."""
    table = json.loads(RUNTIMES.read_text())
    missing = [p.name for p in course_notebooks() if p.name not in table]
    if missing:  # tests/test_runtimes.py fails until they are measured
        print(f"no measured run time yet for {missing}: run `python scripts/run_course.py execute` on them")
    for path in course_notebooks():
        if path.name in table and _set_header(path, table[path.name]):
            print(f"updated the run-time line of {path.name}")
    write_player_notes()
    text = README.read_text(encoding="utf-8")

    def row(m: re.Match) -> str:
        name = m.group("name")
        return m.group("head") + readme_cell(table[name]) + " |" if name in table else m.group(0)

    README.write_text(re.sub(r"(?P<head>^\| \d\d \| \[[^\]]*\]\(notebooks/(?P<name>\d\d_[\w]+\.ipynb)\) \|[^\n]*\| )"
                             r"[^|\n]*\|$", row, text, flags=re.M), encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/run_course.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="run notebooks in full mode in place, time full and fast mode, write times")
    ex.add_argument("notebooks", nargs="*", type=Path)
    ex.add_argument("--no-widget-state", action="store_true", help="do not store widget state in the notebooks")
    ex.add_argument("--jobs", type=int, default=1, help="notebooks run side by side, one thread each (default 1)")
    sub.add_parser("write", help="re-render the run-time lines, the players notes and the README course map")
    notes = sub.add_parser("notes", help="only the players note in the first cell of notebooks with a player")
    notes.add_argument("notebooks", nargs="*", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "write":
        write()
        return 0
    if args.cmd == "notes":
        write_player_notes([p.resolve() for p in args.notebooks] or None)
        return 0
    paths = [p.resolve() for p in args.notebooks] or course_notebooks()
    for path in paths:
        if not path.is_file() or path.suffix != ".ipynb":
            raise SystemExit(f"notebooks: {path} is not a notebook file")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    execute(paths, store_widget_state=not args.no_widget_state, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
