import sys

from batchser.cli import main

sys.exit(main())
