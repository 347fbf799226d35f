"""Torch-free. Run folders and their files (folders), atomic writes (io), background training jobs (jobs).
"""
