# Two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-train: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed-train $@

demo: $(VENV)/.installed-train
	$(BIN)/mdc-jax demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/mdc-jax gradcheck --dtype float64
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-train
	-$(BIN)/python -m pip install --quiet -e ".[bench]"  # torch column where torch installs; optional
	-$(BIN)/python -m pip install --quiet --no-deps "backpack-for-pytorch>=1.7"  # curvature's peer (see pyproject's bench)
	$(BIN)/mdc-jax bench --suite full

# The site (guides + the API reference generated from the docstrings) into site/; --strict: a broken link fails.
docs: $(VENV)/.installed-test
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
