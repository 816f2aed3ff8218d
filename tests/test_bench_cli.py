"""``python -m bench``'s command line: what it says about the workloads it knows."""

from __future__ import annotations

import subprocess
import sys


def test_an_unknown_workload_is_refused_naming_every_known_one() -> None:
    """W0 runs when named (session 8), so the error for an unknown name lists it too; the
    list used to stop at the workloads ``all`` runs."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "w9"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "unknown workload(s) ['w9']; choose from all w0 w1 w2 w3 w4 w5 la" in done.stderr
