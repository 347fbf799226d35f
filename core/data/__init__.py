"""Torch-free. Tasks and their splits: the default Rotten Tomatoes data, GLUE folders, hub datasets, user files.
"""
