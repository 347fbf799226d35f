"""`python -m core.calibrate`: answer "lose at most x points" both ways (dev optimum and guarantee) and write the guaranteed point (the code lives in core/engine/)."""
import sys

from core.engine.calibrate import main

if __name__ == "__main__":
    sys.exit(main())
