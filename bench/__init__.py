"""sweeper's benchmarks: ``python -m bench`` (see BENCHMARKS.md)."""
