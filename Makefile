# One virtual environment for everything; torch is pinned to the local CPU wheel first so that
# no dependency pulls a CUDA build.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint docs demo bench reproduce clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,docs,mujoco,distributed,metaworld]"
	touch $(STAMP)

# two test processes (one per core), each test file kept in one of them (module fixtures, one local Ray)
test: $(STAMP)
	$(PY) -m ruff check metasgd_rl metasgd_rl_envs.py envs tests scripts examples
	$(PY) -m pytest -q -n 2 --dist loadfile
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# the documentation site into site/ (strict: a broken link or a missing API object fails); open site/index.html
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

lint: $(STAMP)
	$(PY) -m ruff check metasgd_rl metasgd_rl_envs.py envs tests scripts examples

demo: $(STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP)
	$(PY) scripts/benchmark.py

# Meta-SGD vs MAML on both 2D-navigation variants, 5 seeds each (about 30 minutes on 2 cores)
reproduce: $(STAMP)
	$(PY) scripts/reproduce_navigation.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
