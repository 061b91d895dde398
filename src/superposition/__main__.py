"""`python -m superposition ...` is the `superposition` command."""

import sys

from superposition.cli import main

sys.exit(main())
