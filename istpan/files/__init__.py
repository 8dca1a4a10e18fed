"""Model files: training checkpoints (`.pt`), shareable Hugging Face folders, exported graphs and their sidecars.

This layer owns every format a trained model is written in and the one loader that reads them all; inference,
evaluation and training sit above it.
"""
