"""Mooring's wire protocol: generated messages, negotiation, checksums and mTLS credentials.

The generated modules live in `proto.v1` (excluded from lint and typing). Everything
else imports `proto.pb` for messages and `proto.rpc` for the service stubs.
"""

from proto import _codec as codec
from proto.v1 import mooring_pb2 as pb
from proto.v1 import mooring_pb2_grpc as rpc

__all__ = ["codec", "pb", "rpc"]
