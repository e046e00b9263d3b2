"""`python -m mooring` and the `mooring` console script."""

import os
import sys

# gRPC's C core writes lines of its own to stderr (a TLS handshake that a secured etcd
# refuses prints three), which would break one-line errors and --log-format json. It
# reads GRPC_VERBOSITY once, when grpc is imported, so this comes before any import of
# ours. GRPC_VERBOSITY=ERROR (or --debug) keeps them.
if "--debug" not in sys.argv and os.environ.get("MOORING_DEBUG", "") not in ("1", "true"):
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from mooring._cli import main

if __name__ == "__main__":
    sys.exit(main())
