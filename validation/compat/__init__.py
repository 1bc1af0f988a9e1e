"""Compatibility measurements: third-party test suites run unchanged against gqtorch (see :mod:`.torchdiffeq_suite`)."""
