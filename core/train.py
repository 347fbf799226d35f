"""`python -m core.train`: train a multi-exit model into a run folder (the code lives in core/training/)."""
import sys

from core.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
