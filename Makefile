# minidiff: the two commands a new user runs are `make lab` and `make test` (see README.md).
#
# Environment: if a virtual or conda environment is active we install into it; otherwise we
# create .venv here with the Python 3.11 found on PATH.

SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3

ifneq ($(strip $(VIRTUAL_ENV)$(CONDA_PREFIX)),)
  PY := python
  ENV_DEP :=
else
  PY := .venv/bin/python
  ENV_DEP := .venv/bin/python
endif

# Notebooks under nbval: lax mode (compare only # NBVAL_CHECK_OUTPUT cells), the current
# environment's kernel, one sanitize file, an explicit cell timeout, and whole notebooks per worker.
NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg \
               --nbval-cell-timeout=600 -p no:cacheprovider
NB_WORKERS ?= 2
# Two notebooks side by side on 2 cores: one thread each.
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
CORES := $(shell nproc 2>/dev/null || echo 2)

.PHONY: install lab test test-all test-unit test-browser test-cudasim test-notebooks course site student bench gpu-check clean help

help:
	@echo "make lab     - set everything up and open the course in JupyterLab"
	@echo "make test    - install if needed, then run every test (unit, CUDA simulator, notebooks, browser)"
	@echo "make course  - execute every notebook in full mode, write outputs and widget state back, render site/"
	@echo "make student - write the student edition (solution cells removed, outputs cleared) to student/"
	@echo "make install - the install step the others share"
	@echo "make bench   - kernel benchmark (kernels/BENCHMARKS.md records its figures)"

# The install is redone when the dependency files change (a stamp inside the environment).
install: $(ENV_DEP)
	@stamp="$$($(PY) -c 'import sys; print(sys.prefix)')/.minidiff-installed"; \
	if [ ! -f "$$stamp" ] || [ pyproject.toml -nt "$$stamp" ] || [ constraints.txt -nt "$$stamp" ]; then \
	  set -e; \
	  $(PY) -m pip install --upgrade pip >/dev/null; \
	  echo "installing minidiff and its dependencies (torch pinned by constraints.txt)"; \
	  $(PY) -m pip install -c constraints.txt -e ".[test]"; \
	  touch "$$stamp"; \
	else echo "minidiff already installed in $$($(PY) -c 'import sys; print(sys.prefix)')"; fi

.venv/bin/python:
	$(PYTHON_BOOTSTRAP) -m venv .venv

# JupyterLab refuses to start as root (containers, course machines) unless told it may.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: install
	$(PY) -m jupyter lab $(LAB_FLAGS) notebooks/

test: install
	@$(MAKE) --no-print-directory test-all test-cudasim

# Everything but the CUDA simulator in one pytest-xdist session: unit tests, browser tests and every notebook
# under nbval (fast mode) share NB_WORKERS workers, one thread each. Each module and each notebook is one work
# unit, the longest first (tests/conftest.py), so no stage waits for another and the quick unit tests fill
# the end. The stages one by one: test-unit, test-browser, test-notebooks.
test-all: install
	MINIDIFF_FAST=1 $(ONE_THREAD) $(PY) -m pytest tests notebooks/ $(NBVAL_FLAGS) -q -n $(NB_WORKERS) \
	  --dist loadscope --no-loadscope-reorder --durations=30

# Unit tests two at a time (one thread each, like the notebooks).
test-unit: install
	$(ONE_THREAD) $(PY) -m pytest tests -q -m "not browser" -n $(NB_WORKERS)

# JupyterLab and the rendered site in Chromium (the kernels they start run one thread each).
test-browser: install
	NUMBA_NUM_THREADS=$(CORES) $(PY) -m pytest tests -q -m browser

test-cudasim: install
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest tests/cudasim -q -p no:cacheprovider

test-notebooks: install
	MINIDIFF_FAST=1 $(ONE_THREAD) $(PY) -m pytest $(NBVAL_FLAGS) -n $(NB_WORKERS) --dist loadscope notebooks/

# Every notebook in full mode, outputs written back, one at a time; then timed once in fast mode. The times go to
# notebooks/runtimes.json and into each notebook's header and the README's course map (scripts/run_course.py).
course: install
	$(PY) scripts/run_course.py execute
	$(MAKE) --no-print-directory site

# The site works offline: MathJax from jupyter-server-mathjax, players from the saved widget state.
site: install
	$(PY) scripts/render_course.py notebooks site

# Student edition: nbconvert's TagRemovePreprocessor drops cells tagged `solution`; outputs cleared.
student: install
	rm -rf student
	$(PY) scripts/student_edition.py notebooks student

bench: install
	$(PY) -m minidiff.kernels.bench

# The prepared GPU check (kernels/BENCHMARKS.md, GPU): CUDA tests without the simulator and the CUDA benchmarks,
# logged under GPU_CHECK_DIR (default $$OUT, else test-output/gpu-check). No install step: a GPU machine brings its own.
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_DIR)

clean:
	rm -rf site student test-output .pytest_cache build *.egg-info
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
