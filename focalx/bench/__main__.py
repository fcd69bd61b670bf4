"""``python -m focalx.bench``: the command, and the workers it starts."""

import sys

from .cli import main

sys.exit(main())
