"""`python -m audiocpc` works like the `audiocpc` console script."""

import sys

from audiocpc.cli import main

sys.exit(main())
