"""A local web page to write with a model: ``python -m lstmlm serve``."""
