"""``bench solver``'s optional diffrax column: left out with a note where jax/diffrax are missing, and, where they are
installed, a diffrax solve that agrees with the closed form to the tolerance's order."""

from __future__ import annotations

import numpy as np
import pytest

from validation.bench import solver as bench
from validation.bench.problems import PROBLEMS


def test_a_missing_optional_library_leaves_its_column_out(monkeypatch):
    monkeypatch.setitem(bench.OPTIONAL, "diffrax", lambda: False)
    assert "diffrax" not in bench.available_methods()
    assert {"gqref", "scipy_rk45", "torchdiffeq", "gqtorch"} <= set(bench.available_methods())


def test_diffrax_column_solves_the_linear_problem():
    pytest.importorskip("diffrax", reason="the optional bench extra (jax, diffrax) is not installed")
    problem = PROBLEMS["linear"]
    run = bench.diffrax_solver(problem)()
    exact = problem.exact(problem.t_span[1])
    # dopri5's global error at rtol = atol = 1e-8 over ~100 steps of a contractive problem stays within 100·tol;
    # a wrong sign, time span or parameter layout would be off by O(1)
    assert np.max(np.abs(run.y - exact)) < 100 * problem.rtol
    assert run.nfe == -1 and run.n_accepted > 0
