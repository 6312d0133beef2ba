# The two commands a newcomer needs:  make demo   and   make test
# Both install what they need first (pip packages; Debian packages when run as root).
PYTHON ?= python3
DATA ?= ../shared/data
ANNOTATIONS ?= $(DATA)/cholect50-sap/total_video_info.json

.PHONY: setup demo test lint bench

setup:
	@bash .ci/setup.sh

demo: setup
	$(PYTHON) -m training.cli evaluate --annotations $(ANNOTATIONS)

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test: setup lint
	$(PYTHON) -m pytest -m "not slow and not gpu"
