"""`python -m studio.cli ...` is `lora-studio ...`, as `python -m studio ...` is."""

import sys

from studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
