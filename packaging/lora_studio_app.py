"""The PyInstaller entry point (packaging/lora-studio.spec): `lora-studio` as one frozen program.

With no arguments it opens the window, like the installed console script.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    # datasets may start worker processes; in a frozen app they re-run this program, which must
    # hand them to multiprocessing instead of opening a second window
    multiprocessing.freeze_support()
    from studio.core.childcmd import run_frozen_child

    if not run_frozen_child(sys.argv):   # a run's process or the engine job process, else the program
        from studio.cli import main

        sys.exit(main())
