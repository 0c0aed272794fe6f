"""pullrun benchmarks against the docker CLI (issue 4): `python -m bench`."""
