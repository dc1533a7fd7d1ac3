"""microcloudd: the microcloud daemon."""

__version__ = "0.1.0"
