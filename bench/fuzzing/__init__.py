"""Fuzzing of every entry point that takes input from outside: one module per entry point, each
with `fuzz(n, seed) -> Tally`. tests/test_fuzz.py runs them small and deterministic in CI;
bench/fuzz.py runs them long and prints one JSON object."""
