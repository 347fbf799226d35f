"""`python -m core.report`: regenerate docs/RESULTS.md from the runs in checkpoints/ (the code lives in core/engine/)."""
import sys

from core.engine.report import main

if __name__ == "__main__":
    sys.exit(main())
