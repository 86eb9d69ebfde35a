"""onceupon: interactive learning of small language models from teacher ratings."""

__version__ = "0.1.0"
