"""Benchmark scripts: each measures archq against its raw baseline in alternating rounds and prints figures."""
