"""Torch (but config, the option table, which the Train page reads). Losses, LeeBERT Ω and its optimizers,
the training loop, and a run folder's lifecycle from options to cache.
"""
