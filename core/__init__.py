"""Early-Exit Lab: multi-exit models, exit caches, exit rules and what they cost and earn.

One folder per part; the torch-free ones say so in their first line, and nothing in them imports
torch at module level, so the exploring pages start fast (docs/CONTRACTS.md has the import layers).

    runs/      torch-free: run folders, atomic files, background training jobs
    data/      torch-free: tasks and their sources (default data, GLUE folders, hub names, user files)
    engine/    torch-free: the exit cache, every exit rule, exact curves, metrics, calibration, report
    app/       torch-free: what the Streamlit pages show (tables, figures, state, the Train form)
    models/    torch: backbones run layer by layer, the multi-exit model
    training/  torch: the option table (torch-free), losses, Ω, the training loop and its run lifecycle
    serving/   torch at run time: batched early exit, operating-point files, predict, the promise

The modules at this level are the commands: `python -m core.train | predict | export | report | promise |
calibrate`.
"""
