"""`python -m istpan ...`: the same command as `istpan ...` (for environments where the script is not on PATH)."""

import sys

from istpan.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
