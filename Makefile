# segml: `make demo` and `make test` are all a new user needs (Python 3.10+ and make).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo ui lint format typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/segml features experiments/cdnow.yaml --out build/cdnow_features.parquet
	@echo "demo: built the CDNOW customer features (tuning, registry and scoring come in later releases)"

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

lint: install
	$(BIN)/ruff check segml tests benchmarks
	$(BIN)/ruff format --check segml tests benchmarks

format: install
	$(BIN)/ruff format segml tests benchmarks
	$(BIN)/ruff check --fix segml tests benchmarks

typecheck: install
	$(BIN)/mypy segml

clean:
	rm -rf build .pytest_cache
