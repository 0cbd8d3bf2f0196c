# segml: `make demo` and `make test` are all a new user needs (Python 3.10+ and make).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-fast demo ui serve screenshots lint format typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

# Everything but the tests marked slow (Spark, UI, distributed tuning, end-to-end runs): a few
# minutes on 2 cores, for the edit-test loop. `make test` (what CI runs) includes them.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The first demo tunes on 1997; once a store exists, the demo retrains on data up to mid-1998.
DEMO_SPEC ?= $(if $(wildcard mlflow.db),experiments/cdnow_later.yaml,experiments/cdnow.yaml)
DEMO_TRIALS ?= 30
SEGML := $(BIN)/segml

# The life of a segmentation on CDNOW: tune on 1997, review, promote, then score the same
# customers as of mid-1998 as a batch job. Run it again and the story goes on: it retrains on
# the customers as of mid-1998, registers a challenger aligned to the champion, reviews it
# (who moved between segments) and promotes it only if it passes.
demo: install
	$(SEGML) tune $(DEMO_SPEC) --n-trials $(DEMO_TRIALS)
	@status=0; $(SEGML) review --data $(DEMO_SPEC) --out build/review || status=$$?; \
	if [ $$status -eq 0 ]; then $(SEGML) promote challenger --spec $(DEMO_SPEC); \
	elif [ $$status -eq 3 ]; then echo "demo: the challenger failed review; the champion stays"; \
	else exit $$status; fi
	$(SEGML) score --spec $(DEMO_SPEC) --input experiments/data/cdnow_master.txt \
	  --reference-date 1998-06-30 --output build/scores.parquet --report build/scoring
	@echo "demo: champion $$(sed -n 's/^# Scoring: //p' build/scoring/scoring.md) scored the customers as of 1998-06-30"
	@echo "demo: scores build/scores.parquet; scoring report build/scoring/scoring.html;"
	@echo "demo: review build/review/review.html; MLflow store ./mlflow.db (open it with: make ui)"

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

# The champion as a REST endpoint: POST JSON to http://127.0.0.1:5001/invocations.
# `mlflow models serve` starts uvicorn by name, so the venv's bin goes first on PATH.
SERVE_MODEL ?= models:/cdnow_rfm@champion
SERVE_PORT ?= 5001
serve: install
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" \
	  $(BIN)/mlflow models serve -m $(SERVE_MODEL) --env-manager local -p $(SERVE_PORT)

# The README's MLflow UI images, from the demo's store (run `make demo` first; needs Debian's
# chromium: apt-get install chromium).
screenshots: install
	$(BIN)/python -m docs.screenshots --store . --spec $(DEMO_SPEC) --out docs/images

lint: install
	$(BIN)/ruff check segml tests benchmarks docs
	$(BIN)/ruff format --check segml tests benchmarks docs

format: install
	$(BIN)/ruff format segml tests benchmarks docs
	$(BIN)/ruff check --fix segml tests benchmarks docs

typecheck: install
	$(BIN)/mypy segml

clean:
	rm -rf build .pytest_cache
