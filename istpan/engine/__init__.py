"""Config-free building blocks of training and evaluation: loop, metrics, checkpoints, distributed helpers.

Import the functions from their modules (`istpan.engine.train.train`, `istpan.engine.evaluate.evaluate`, ...): this
package file stays empty so that `import istpan.engine.checkpoint` does not pull in TensorBoard or the data pipeline.
"""
