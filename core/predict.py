"""`python -m core.predict`: early-exit predictions for new text from an operating-point file (the code lives in core/serving/)."""
import sys

from core.serving.predict import main

if __name__ == "__main__":
    sys.exit(main())
