"""Shared fixtures: where the real data lives, and a clean logging setup for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from planner.logs import reset_logging

pytest_plugins = ["tests.mqtt_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("LLM_SAP_DATA", ROOT.parent / "shared" / "data"))
ANNOTATIONS = DATA_DIR / "cholect50-sap" / "total_video_info.json"
CLIPS_DIR = DATA_DIR / "laparoscopic-clips"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    reset_logging()
    yield
    reset_logging()


@pytest.fixture
def annotations_path() -> Path:
    if not ANNOTATIONS.is_file():
        pytest.skip(f"real CholecT50-SAP annotations not found at {ANNOTATIONS} (set LLM_SAP_DATA)")
    return ANNOTATIONS


@pytest.fixture
def clips_dir() -> Path:
    if not CLIPS_DIR.is_dir() or not any(CLIPS_DIR.glob("*.mp4")):
        pytest.skip(f"real laparoscopic clips not found in {CLIPS_DIR} (set LLM_SAP_DATA)")
    return CLIPS_DIR
