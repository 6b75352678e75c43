"""cldiff-bench: a benchmark suite for continual learning of diffusion models."""
__version__ = "0.2.0"
