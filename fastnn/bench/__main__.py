"""`python -m fastnn.bench`: the same as `fastnn bench`."""

import sys

from .cli import main

sys.exit(main())
