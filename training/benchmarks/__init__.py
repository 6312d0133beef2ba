"""Benchmarks that need tiny Qwen models (built here), run as ``python -m training.benchmarks.NAME``:
ranking on the cached prefix vs a full forward (``engines``) and rooms per node with one shared
engine (``rooms``). Nothing that ships imports this package (an import-linter contract)."""
