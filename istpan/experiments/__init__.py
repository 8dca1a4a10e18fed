"""Experiments on the synthetic dataset: the `istpan demo` job and the paper's ablation table (`istpan ablate`).

Import from the modules (`istpan.experiments.demo`, `istpan.experiments.ablation`); this file stays empty so that
importing one does not pull in the other.
"""
