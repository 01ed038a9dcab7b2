"""python -m data_prep: the data_prep command line (data_prep.cli)."""

import sys

from .cli import main

sys.exit(main())
