"""Scoring models on datasets: metrics, the evaluation loop (`istpan eval`, training's validation), late fusion,
anytime calibration and localisation metrics.
"""
