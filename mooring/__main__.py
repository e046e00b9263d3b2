"""`python -m mooring` and the `mooring` console script."""

import sys

from mooring._cli import main

if __name__ == "__main__":
    sys.exit(main())
