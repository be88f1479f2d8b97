"""Benchmark scripts, each run as `python bench/NAME.py` (see docs/benchmarks.md); the packages
beside them hold their parts, and bench/common what they share. Processes, ports and fleets come
from the test harness, tests/harness/."""
