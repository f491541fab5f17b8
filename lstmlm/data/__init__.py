"""The corpus, from text to ids: download, tokenise (and the vocabulary), tensorise, and the
(T, B) batches the model reads."""
