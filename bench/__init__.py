"""clipcleaner benchmark (see bench/run.py and docs/PERFORMANCE.md)."""
