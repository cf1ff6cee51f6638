"""FAISS index building over embedding shards. Installed as `uniretrieve.index`."""

from uniretrieve.index.faiss_builds import warn_if_both_builds

warn_if_both_builds()  # every module here that imports faiss is below this package
