"""Regenerate the Python code for the v1 protos: ``python -m chronicle.protos.build``.

The ``.proto`` files live in ``protos/v1/`` and import each other as
``chronicle/protos/v1/<name>.proto``. protoc's virtual-path mapping
(``-Ichronicle/protos=<this folder>``) makes the generated modules import
``chronicle.protos.v1.<name>_pb2`` with no rewriting. ``--check`` exits 1 when the committed
code differs from what protoc generates now (the staleness test runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent
SOURCE_DIR = PROTOS_DIR / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every v1 ``.proto`` into ``out_dir``; return the generated files."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    mypy_plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if mypy_plugin is None:
        raise SystemExit("protoc-gen-mypy not found beside this Python: pip install mypy-protobuf")
    protos = sorted(SOURCE_DIR.glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-Ichronicle/protos={PROTOS_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(f"chronicle/protos/v1/{p.name}" for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    produced = out_dir / "chronicle" / "protos" / "v1"
    return sorted(p for p in produced.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or with ``--check``, verify) the generated protobuf modules."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        current = sorted(p for p in SOURCE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
        if options.check:
            stale = [
                p.name
                for p in fresh
                if not (SOURCE_DIR / p.name).exists()
                or not filecmp.cmp(p, SOURCE_DIR / p.name, shallow=False)
            ]
            extra = sorted({p.name for p in current} - {p.name for p in fresh})
            if stale or extra:
                print(
                    f"generated protobuf code is stale: {stale + extra}; "
                    "run `python -m chronicle.protos.build`",
                    file=sys.stderr,
                )
                return 1
            return 0
        for old in current:
            old.unlink()
        for path in fresh:
            shutil.copyfile(path, SOURCE_DIR / path.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
