"""Validation of gq against scipy and torchdiffeq: benchmarks and the demo (``python -m validation <command>``)."""
