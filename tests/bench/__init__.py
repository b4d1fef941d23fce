"""Benchmarks: `make bench`. Each figure is printed as a ratio against a reference measured in the same run."""
