"""Benchmarks for astpresence: ``python -m bench`` (see bench/README.md).

Each scenario module exposes ``run(quick: bool) -> list[Row]``. Figures with a
natural baseline are reported as a ratio to that baseline measured in the same
run, because absolute times on shared machines are noisy.
"""
