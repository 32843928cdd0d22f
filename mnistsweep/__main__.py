"""`python -m mnistsweep`: the command line of mnistsweep.cli."""

import sys

from mnistsweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
