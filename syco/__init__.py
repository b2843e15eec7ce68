"""syco: measure and control sycophancy in language models trained with human feedback."""

__version__ = "0.1.0"
