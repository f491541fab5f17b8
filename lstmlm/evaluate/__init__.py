"""Perplexity, static and adapted (the neural cache, dynamic evaluation)."""
