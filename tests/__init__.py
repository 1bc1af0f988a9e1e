"""gq test suite."""
