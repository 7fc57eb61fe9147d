"""Regenerate grpc_predict_v2_pb2.py and grpc_predict_v2_pb2_grpc.py from the .proto.

Run from anywhere: `python src/superserve/server/proto/gen_proto.py` (needs grpcio-tools).
The generated files are committed as source so that serving needs no code generation.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    from grpc_tools import protoc

    rc = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"--python_out={HERE}",
                      f"--grpc_python_out={HERE}", str(HERE / "grpc_predict_v2.proto")])
    if rc != 0:
        return rc
    # grpc_tools emits `import grpc_predict_v2_pb2`; make it a package-relative import.
    grpc_file = HERE / "grpc_predict_v2_pb2_grpc.py"
    text = grpc_file.read_text()
    text = re.sub(r"^import grpc_predict_v2_pb2 as", "from . import grpc_predict_v2_pb2 as",
                  text, flags=re.MULTILINE)
    grpc_file.write_text(text)
    # tritonclient registers the same `inference.*` symbols in protobuf's default pool; a
    # private pool lets both live in one process (tests, load generators).
    pb_file = HERE / "grpc_predict_v2_pb2.py"
    text = pb_file.read_text()
    marker = "_descriptor_pool.Default().AddSerializedFile("
    if marker not in text:
        raise RuntimeError(f"unexpected protoc output: {marker!r} not found in {pb_file}")
    text = text.replace(marker, "_POOL.AddSerializedFile(")
    text = text.replace("_sym_db = _symbol_database.Default()",
                        "_sym_db = _symbol_database.Default()\n"
                        "_POOL = _descriptor_pool.DescriptorPool()  # private: see gen_proto.py")
    pb_file.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
