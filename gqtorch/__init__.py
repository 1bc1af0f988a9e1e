"""gqtorch — the PyTorch implementation of gq (odeint, odeint_adjoint, odeint_adjoint_gq).

Not built yet: see the project's issues. Importing it is harmless; it exports nothing so far.
"""

__all__: list[str] = []
