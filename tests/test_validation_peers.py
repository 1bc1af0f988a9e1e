"""MALI and ACA (TorchDiffEqPack) in the toy experiment: their gradients on the closed-form toy, and the report of
them as unavailable where the package is missing."""

from __future__ import annotations

import pytest
import torch

from validation.tasks import peers, toy_gradient

RTOL, ATOL = 1e-6, 1e-7


@pytest.mark.parametrize("peer", peers.PEERS)
def test_peer_gradients_on_the_toy_match_the_closed_form(peer):
    pytest.importorskip("TorchDiffEqPack", reason="TorchDiffEqPack not installed (pip install --no-deps "
                                                  "TorchDiffEqPack==1.0.1)")
    run = toy_gradient.toy_gradient(24.0, peer, torch.float64, RTOL, ATOL)
    # adaptive solvers at rtol 1e-6 take O(100) steps on [0, 24]: the global relative error of z(T) is at most
    # about steps·rtol ≈ 1e-4, doubled in L = z²; 1e-3 bounds L, dL/dz0 and dL/da alike
    for quantity in ("L", "dL_dz0", "dL_da"):
        assert run.rel_errors[quantity] < 1e-3, quantity
    assert run.values["dL_dT"] is None and run.rel_errors["dL_dT"] is None  # T is a number to TorchDiffEqPack


def test_missing_package_reports_the_peers_as_unavailable(monkeypatch):
    monkeypatch.setattr(toy_gradient, "available", lambda: False)
    methods, missing = toy_gradient.usable_methods(["gq", "mali", "direct", "aca"])
    assert methods == ["gq", "direct"] and missing == ["mali", "aca"]


def test_unknown_peer_is_refused():
    with pytest.raises(ValueError, match="peer must be one of"):
        peers.solve_to_end("rk45", lambda t, y: y, torch.ones(1), 0.0, 1.0, RTOL, ATOL)
