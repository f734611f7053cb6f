"""Benchmarks (speed and memory), run by `make bench`; never part of `make test`."""
