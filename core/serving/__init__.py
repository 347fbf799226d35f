"""Torch at run time. Real layer-by-layer early exit (predictor), operating-point files (export), predictions
for new text (predict), the promise measured on unseen rows, and the Playground's one-sentence run.
"""
