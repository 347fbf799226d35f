"""The names pages and tests have always imported as `core.views`: run data (core.app.rundata) and
figures (core.app.figures) in one namespace. New code imports from core.app directly.
"""
from core.app.figures import *  # noqa: F401,F403
from core.app.rundata import *  # noqa: F401,F403
