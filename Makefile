# The two commands a newcomer needs:  make demo   and   make test
# Both install what they need first (pip packages; Debian packages when run as root).
PYTHON ?= python3
DATA ?= ../shared/data
ANNOTATIONS ?= $(DATA)/cholect50-sap/total_video_info.json

.PHONY: setup demo evaluate test lint bench

setup:
	@bash .ci/setup.sh

demo: setup
	$(PYTHON) -m training.cli demo

evaluate: setup
	$(PYTHON) -m training.cli evaluate --annotations $(ANNOTATIONS)

bench: setup
	$(PYTHON) -m streamer.bench replay
	$(PYTHON) -m streamer.bench live
	$(PYTHON) -m streamer.mqtt.latency_bench
	$(PYTHON) -m streamer.segmenter_bench
	$(PYTHON) -m streamer.soak
	$(PYTHON) -m streamer.webrtc_bench --browser

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test: setup lint
	$(PYTHON) -m pytest -m "not slow and not gpu"
