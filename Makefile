# Each target does all of its own set-up on a fresh machine with Python >= 3.10.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
OUT    ?= runs/demo
# FORCE=1 reruns everything; by default finished results in $(OUT) are reused
FORCE  ?=
# worker processes for the experiments made of sweep points (2 cores: 2)
JOBS   ?= 2

.PHONY: demo test lint install clean wheel-check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,hf,ray,slurm,tensorboard]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/efflab reproduce --profile $(PROFILE) --out $(OUT) --jobs $(JOBS) $(if $(FORCE),--force,)

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest

wheel-check:
	bash .ci/wheel-check

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info .pytest_cache
