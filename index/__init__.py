"""FAISS index building over embedding shards. Installed as `uniretrieve.index`."""
