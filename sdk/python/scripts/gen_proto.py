"""Regenerates the committed gRPC stubs in src/herald/v1 from the repository's proto/.

    python scripts/gen_proto.py          # rewrite src/herald/v1/*_pb2*.py(i)
    python scripts/gen_proto.py --check  # exit 1 when the committed stubs differ from proto/

The stubs are committed (so `pip install ./sdk/python` needs no code generator) and
the SDK's tests run `--check`, so CI fails when proto/ changes without them.
Needs grpcio-tools (the `test` extra pins the version the stubs were made with).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # sdk/python
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "src" / "herald" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(into: Path) -> list[Path]:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    protos = sorted((PROTO_ROOT / "herald" / "v1").glob("*.proto"))
    include = Path(protoc.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (into / "herald" / "v1").iterdir() if p.name.endswith(SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, change nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p for p in OUT.iterdir() if p.name.endswith(SUFFIXES))
        if args.check:
            names = {p.name for p in fresh}
            stale = sorted(names ^ {p.name for p in committed})
            stale += [p.name for p in fresh if p.name not in stale and not filecmp.cmp(p, OUT / p.name, shallow=False)]
            if stale:
                print(f"stubs in {OUT} differ from {PROTO_ROOT}: {', '.join(stale)}", file=sys.stderr)
                print("run: python sdk/python/scripts/gen_proto.py", file=sys.stderr)
                return 1
            print(f"{len(fresh)} stub files match proto/")
            return 0
        for p in committed:
            p.unlink()
        for p in fresh:
            shutil.copy(p, OUT / p.name)
        print(f"wrote {len(fresh)} files into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
