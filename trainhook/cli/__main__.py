"""`python -m trainhook.cli`: the same as the `trainhook` console script."""

import sys

from trainhook.cli import main

sys.exit(main())
