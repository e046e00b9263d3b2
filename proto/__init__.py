"""Mooring's wire protocol: generated messages, negotiation, checksums, mTLS credentials, and
what a valid Argo CD object is (`objects`), and every metric family (`catalog`). Its
errors derive from `errors.ProtoError`.

The generated modules live in `proto.v1` (excluded from lint and typing). Everything
else imports `proto.pb` for messages and `proto.rpc` for the service stubs.
"""

from proto import _catalog as catalog
from proto import _codec as codec
from proto import _credentials as credentials
from proto import _errors as errors
from proto import _exposition as exposition
from proto import _flagtable as flagtable
from proto import _inventory as inventory
from proto import _lazy as lazy
from proto import _limits as limits
from proto import _logfields as logfields
from proto import _objects as objects
from proto.v1 import mooring_pb2 as pb
from proto.v1 import mooring_pb2_grpc as rpc

__all__ = [
    "catalog",
    "codec",
    "credentials",
    "errors",
    "exposition",
    "flagtable",
    "inventory",
    "lazy",
    "limits",
    "logfields",
    "objects",
    "pb",
    "rpc",
]
