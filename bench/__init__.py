"""pullrun benchmarks against the docker CLI: `python -m bench`."""
