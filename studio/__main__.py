"""`python -m studio ...` is `lora-studio ...` (also for `accelerate launch -m studio train CONFIG`)."""

import sys

from studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
