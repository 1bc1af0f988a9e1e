"""Growable per-step records inside kernels (numba has no list of arrays that is both fast and cacheable)."""

from __future__ import annotations

import numpy as np

from gqref._numba import jitable

INITIAL_RECORD_ROWS = 64


@jitable
def ensure_rows(table, rows):
    """``table`` with room for at least ``rows`` rows (doubling, contents kept)."""
    if rows <= table.shape[0]:
        return table
    capacity = table.shape[0]
    while capacity < rows:
        capacity *= 2
    bigger = np.empty((capacity, table.shape[1]), dtype=table.dtype)
    bigger[: table.shape[0]] = table
    return bigger
