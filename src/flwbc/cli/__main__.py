"""`python -m flwbc.cli`: the `flwbc` command."""

import sys

from flwbc.cli import main

sys.exit(main())
