"""raysweep: staged hyperparameter sweeps for PyTorch on Ray Tune, tracked in MLflow."""
__version__ = "0.1.0"
