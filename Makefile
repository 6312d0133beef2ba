# The two commands a newcomer needs:  make demo   and   make test
# Both set up the project's own virtual environment first (.venv/, reused when present) and run
# everything from it. The set-up (.ci/setup.sh) finds Python 3.11 or 3.12 (or PYTHON=/path/to/python),
# creates the venv, installs torch (CPU build) and the project with its extras into it, and, as root,
# the Debian packages the tests use (mosquitto, chromium). It runs again only when pyproject.toml or
# the set-up script changed, so a second `make test` starts at once.
PYTHON ?=
VENV ?= .venv
VENV_OPTS ?=
VENV_PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DATA ?= ../shared/data
ANNOTATIONS ?= $(DATA)/cholect50-sap/total_video_info.json
PYTEST_ARGS ?=

.PHONY: setup demo evaluate test lint bench

setup: $(INSTALLED)

$(VENV_PY):
	@VENV="$(VENV)" PYTHON="$(PYTHON)" VENV_OPTS="$(VENV_OPTS)" bash .ci/setup.sh venv

$(INSTALLED): pyproject.toml .ci/setup.sh | $(VENV_PY)
	@VENV="$(VENV)" bash .ci/setup.sh install
	@touch $@

demo: setup
	$(VENV_PY) -m training.cli demo

evaluate: setup
	$(VENV_PY) -m training.cli evaluate --annotations $(ANNOTATIONS)

bench: setup
	$(VENV_PY) -m streamer.benchmarks.performance
	$(VENV_PY) -m streamer.benchmarks.pipeline replay
	$(VENV_PY) -m streamer.benchmarks.pipeline live
	$(VENV_PY) -m streamer.benchmarks.mqtt_latency
	$(VENV_PY) -m streamer.benchmarks.segmenter
	$(VENV_PY) -m streamer.benchmarks.soak
	$(VENV_PY) -m streamer.benchmarks.webrtc --browser

lint: setup
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .
	$(VENV_PY) -m mypy
	$(VENV)/bin/lint-imports

# pytest exits 5 when it collected no test: say so plainly (nothing was tested) and fail.
test: setup lint
	$(VENV_PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): nothing was tested" >&2; fi; \
	exit $$rc
