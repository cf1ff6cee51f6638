"""The backbone registry and the encoder: items → model inputs → L2-normalised last-token embeddings."""
