"""The PyInstaller entry point (packaging/lora-studio.spec): `lora-studio` as one frozen program.

With no arguments it opens the window, like the installed console script.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    # datasets may start worker processes; in a frozen app they re-run this program, which must
    # hand them to multiprocessing instead of opening a second window
    multiprocessing.freeze_support()
    from studio.cli import main

    sys.exit(main())
