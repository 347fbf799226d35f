"""`python -m core.cache_variant --run R --precision int8`: write a run's exit cache at another precision (cache-int8.npz beside cache.npz) with its latency tables (the code lives in core/serving/cache_variant.py)."""
import sys

from core.serving.cache_variant import main

if __name__ == "__main__":
    sys.exit(main())
