"""`python -m core.export`: write an operating-point file for a run, a rule and its knobs (the code lives in core/serving/)."""
import sys

from core.serving.export import main

if __name__ == "__main__":
    sys.exit(main())
