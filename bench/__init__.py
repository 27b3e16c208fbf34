"""Benchmark harness: `make bench` (= `python -m bench.run`). See bench/README.md."""
