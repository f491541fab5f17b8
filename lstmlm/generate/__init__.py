"""Text from a prompt: the numpy engine, sampling, prompts and detokenising, and the
``generate`` command. No torch."""
