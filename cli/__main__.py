"""`python -m livetok.cli`: the `livetok` command (what `receive --workers` starts its workers with)."""

import sys

from .app import main

sys.exit(main())
