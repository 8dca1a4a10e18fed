"""istpan: video action classification with Interaction-aware Spatio-Temporal Pyramid Attention."""

__version__ = "0.1.0"
