"""`python -m fleetgate`: the same as the `fleetgate` console script."""

import sys

from fleetgate.cli import main

sys.exit(main())
