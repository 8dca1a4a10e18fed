"""`istpan train`: the training loop, its optimiser and schedule, mixing, resume and logging.

Import the functions from their modules (`istpan.training.train.train`): this package file stays empty so that
importing one piece does not pull in TensorBoard or the data pipeline.
"""
