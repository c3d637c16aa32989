import sys

from batchser.cli import main

# Guarded: Dask's worker processes re-import the main module when they start.
if __name__ == "__main__":
    sys.exit(main())
