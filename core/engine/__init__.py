"""Torch-free. The strategy engine: the exit cache, every exit rule of the papers, exact speed-up/score curves,
metrics and the goal picker, calibrated guarantees, run health, Ω drift, and the generated report.
"""
