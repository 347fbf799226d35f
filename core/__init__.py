"""Early-Exit Lab engine: multi-exit models, exit caches, exit strategies and their metrics.

The strategy side (`cache`, `strategies`, `metrics`, `runs`) never imports torch so the exploring
pages start fast; the model side (`backbones`, `model`, `predictor`, `train`) does.
"""
