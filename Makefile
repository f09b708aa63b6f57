# One-command set-up: each target creates .venv with the pinned dependencies when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m hicmae.demo

# pytest exits 5 when it collected no test: that is a failure here too.
test: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest

test-fast: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) bench/model_step.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
