"""`python -m corl.cli ...` (what `accelerate launch -m corl.cli` runs): the same as the `corl` command."""

import sys

from corl.cli import main

sys.exit(main())
