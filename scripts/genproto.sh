#!/usr/bin/env bash
# Regenerate the committed gRPC stubs in proto/v1 from proto/v1/mooring.proto.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.}"
python3 -m grpc_tools.protoc -I . --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" proto/v1/mooring.proto
