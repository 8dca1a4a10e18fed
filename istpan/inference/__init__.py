"""Running a trained model: the `Predictor` front door and the modes behind it (whole videos, windows, streams,
anytime, explain, lists of millions of videos). Above the model files, below evaluation and training.
"""
