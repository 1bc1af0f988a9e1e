"""Package-level promises: gqref stays free of torch; its public names are explicit."""

import subprocess
import sys

import gqref


def test_gqref_never_imports_torch():
    code = "import sys, gqref; gqref.solve(lambda t, y, p: -y, [1.0], [0.0, 1.0]); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_names_exist():
    assert all(hasattr(gqref, name) for name in gqref.__all__)
