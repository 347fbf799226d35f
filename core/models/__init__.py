"""Torch. Backbones run layer by layer (any Hugging Face encoder family) and the multi-exit model on top.
"""
