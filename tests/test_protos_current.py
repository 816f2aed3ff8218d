"""The committed protobuf code is what `python -m chronicle.protos.build` generates now."""

import subprocess
import sys


def test_generated_protobuf_code_is_current() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chronicle.protos.build", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_a_changed_proto_is_detected_as_stale(tmp_path: object) -> None:
    """The check can fail: an edited generated module is reported."""
    from chronicle.protos import build

    target = build.SOURCE_DIR / "common_pb2.py"
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\n# edited by hand\n")
        assert build.main(["--check"]) == 1
    finally:
        target.write_bytes(original)
