"""Benchmarks behind ``cityvitals bench``: each measures a stage and a baseline in one run."""
