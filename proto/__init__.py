"""Mooring's wire protocol: generated messages, negotiation, checksums, mTLS credentials, and
what a valid Argo CD object is (`objects`), and every metric family (`catalog`).

The generated modules live in `proto.v1` (excluded from lint and typing). Everything
else imports `proto.pb` for messages and `proto.rpc` for the service stubs.
"""

from proto import _catalog as catalog
from proto import _codec as codec
from proto import _objects as objects
from proto.v1 import mooring_pb2 as pb
from proto.v1 import mooring_pb2_grpc as rpc

__all__ = ["catalog", "codec", "objects", "pb", "rpc"]
