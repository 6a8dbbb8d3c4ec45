"""MuMo-DS: training unified music + motion language models with DeepSpeed."""

__version__ = "0.1.0"
