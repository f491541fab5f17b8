"""The LSTM language model (lstm.py) and the ``model`` section that shapes it (config.py)."""
