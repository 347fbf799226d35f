"""Torch-free. The strategy engine: the exit cache, every exit rule of the papers (one registry entry
each, registered here on import), exact speed-up/score curves, metrics and the goal picker, calibrated
guarantees, run health, Ω drift, and the generated report.
"""
from core.engine import rules  # noqa: F401  (registers the papers' rules in core.engine.registry.STRATEGIES)
