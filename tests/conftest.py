"""Shared test set-up: hypothesis profiles, a repo-local numba cache, few threads for torch."""

import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per pytest-xdist worker: the workers already fill the cores, and oversubscribed threads
    # only slow each other down (torch reads this when it is first imported, which is after this file)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings

# ci: deterministic and modest (chosen automatically under CI=true); dev: the default locally; thorough: many
# examples, for a long run before a release (HYPOTHESIS_PROFILE=thorough).
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
default_profile = "ci" if os.environ.get("CI", "").lower() == "true" else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default_profile))
