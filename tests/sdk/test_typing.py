"""The public decorators type-check the way users expect (mypy --strict on typing_usage.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_public_api_types() -> None:
    usage = Path(__file__).with_name("typing_usage.py")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(usage)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
