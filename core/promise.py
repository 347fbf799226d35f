"""`python -m core.promise`: measure the default run's promise on the held-out test split (the code lives in core/serving/)."""
import sys

from core.serving.promise import main

if __name__ == "__main__":
    sys.exit(main())
