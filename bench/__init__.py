"""Benchmarks of cioguard against the naive ways and against the limit (``make bench``).

See docs/benchmarks.md for the method and the latest figures; results are in bench/results/.
"""
