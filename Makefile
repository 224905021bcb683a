# gradtrack — every target creates/reuses .venv and installs what it needs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/pytest
# Quiet TensorFlow's C++ start-up logs in every command run from here.
export TF_CPP_MIN_LOG_LEVEL := 2

SEED_EXPERIMENTS := seed_backprop seed_backprop_scaled seed_quadratic_torch seed_quadratic_tf \
                    seed_fence seed_linear seed_logistic seed_logistic_tf

.PHONY: install lint format data test test-slow test-all demo bench ui clean repro repro-check

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

data: install
	$(BIN)/gradtrack-data

# The default suite: lint first, then everything not marked slow.
test: lint
	$(PYTEST) -m "not slow" -q

test-slow: install
	$(PYTEST) -m "slow" -q

# Everything, slow and integration tests included (PostgreSQL, mlflow server, Ray, DVC).
test-all: lint
	$(PYTEST) -q --durations=25

demo: data
	@for e in $(SEED_EXPERIMENTS); do \
		echo "=== $$e"; \
		$(BIN)/gradtrack +experiment=$$e reuse=true || exit 1; \
	done
	@echo
	@echo "Every notebook experiment ran and is tracked in mlruns/mlflow.db."
	@echo "Open the MLflow UI:  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db"

# Re-make every DVC result the code changes (dvc repro runs only what is out of date)
# and stage it for the commit: dvc.lock, data/metrics, data/plots, data/summary.*.
repro: install
	PATH="$(abspath $(BIN)):$$PATH" dvc repro
	git add -A -- dvc.lock data/metrics data/plots data/summary.json data/summary.md
	@git diff --cached --stat -- dvc.lock data

# What CI runs: dvc repro, then fail if dvc.lock or a committed result changed.
repro-check: install
	VENV=$(VENV) .ci/check-repro

bench: data
	$(PY) benchmarks/run.py

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
