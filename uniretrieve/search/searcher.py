"""`Searcher`: an index directory + its id map + the model it was built with → ranked hits for queries.

    s = Searcher.load("idx/")                    # the model recorded in index.json loads on first text/image query
    s.search(texts=["a red car"], k=10)           # list (per query) of lists of Hit
    s.search(images=["q.jpg"], where="modality = 'text'")
    s.search(vectors=q)                           # float32 [n, D], no model needed

Filtered search (`where`) over-fetches until k passing hits come back (fetch grows ×4, starting from
k · N / passing rows), and answers the few queries still short with a search restricted to the passing ids, so k
hits come back whenever k rows pass (clip-retrieval's service has no metadata filters at all).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniretrieve.search.filtered import FilteredSearch
from uniretrieve.search.flat import FlatMatmul
from uniretrieve.search.hits import Hit, HitTable, one_chunk
from uniretrieve.search.query import Query, Term, combine
from uniretrieve.types import ImageLike, Item

if TYPE_CHECKING:
    import pyarrow as pa

    from uniretrieve.index.hitstore import HitStore


class ModelMismatchError(ValueError):
    """A query model other than the index's (another space), refused unless forced."""


class Searcher(FilteredSearch):
    """Search one index directory. Build with `Searcher.load`.

    Hits are read from the version's hit store (memory-mapped arrays); the full id map (`idmap`, an Arrow table) is
    read from Parquet only when a filter or the service's item view first needs it."""

    def __init__(
        self,
        index_dir: Path,
        meta: Any,
        index: Any,
        idmap: pa.Table | None = None,
        *,
        store: HitStore | None = None,
        idmap_path: Path | None = None,
        encoder: Any = None,
        model: str | None = None,
        force: bool = False,
        device: str | None = None,
        gpu: bool | None = None,
        trust_remote_code: bool = False,
        model_dtype: str | None = None,
    ) -> None:
        from uniretrieve.index import gpu as gpu_mod
        from uniretrieve.index.hitstore import HitStore
        from uniretrieve.index.kinds import kind_of
        from uniretrieve.index.meta import META_NAME, IndexMetaError
        from uniretrieve.index.tune import set_param

        self.dir = index_dir
        self.meta = meta
        try:
            self.kind = kind_of(meta.type)
        except ValueError as exc:
            raise IndexMetaError(f"{index_dir / META_NAME}: {exc}; rebuild the index") from None
        self.cpu_index = index
        if store is None:
            if idmap is None:
                raise ValueError("Searcher needs an id map or a hit store")
            store = HitStore.from_table(one_chunk(idmap))
        self.store = store
        self._idmap = one_chunk(idmap) if idmap is not None else None
        self._idmap_path = idmap_path
        self.device = device
        self.force = force
        self._model_override = model
        self.trust_remote_code = trust_remote_code  # the caller's, never index.json's
        self.model_dtype = model_dtype
        self._encoder = None
        self.timings: dict[str, float] = {}
        self.hit_columns = store.hit_columns
        self.version: Any = None
        self.live: np.ndarray | None = None if store.deleted is None else ~np.asarray(store.deleted)
        """Rows not replaced by an update (None: all); search returns only these."""
        for name, value in meta.search_params.items():
            set_param(index, name, int(value))
        self.on_gpu = False
        self.work = index
        self.torch_exact = None
        self.flat_matmul = FlatMatmul.of(index)
        use_gpu = gpu_mod.resolve_gpu(gpu) if gpu is not False else False
        if use_gpu and self.kind.gpu:
            try:
                self.work = gpu_mod.index_to_gpus(index, fp16=self.kind.gpu_fp16)
                for name, value in meta.search_params.items():
                    set_param(self.work, name, int(value))
                self.on_gpu = True
            except RuntimeError:  # a layout the GPU indexes lack (e.g. SQ8 re-ranking): stay on the CPU
                self.work = index
        elif gpu is not False and self.kind.exact and gpu_mod.cuda_device_count() > 0:
            # CUDA but no FAISS GPU build: exact search as a torch matmul + top-k on the device
            self.torch_exact = gpu_mod.TorchExactIndex(index.reconstruct_n(0, index.ntotal))
        if encoder is not None:
            self._set_encoder(encoder)

    @property
    def idmap(self) -> pa.Table:
        """The whole id map as one Arrow table, read from the version's Parquet file on first use."""
        if self._idmap is None:
            from uniretrieve.index.idmap import read_idmap

            if self._idmap_path is None:
                raise ValueError(f"{self.dir}: this searcher was given no id map")
            self._idmap = one_chunk(read_idmap(self._idmap_path))
        return self._idmap

    @property
    def filter_columns(self) -> list[str]:
        """Id-map columns a `where` filter can name."""
        from uniretrieve.search.filters import FILTER_COLUMNS

        return [c for c in (*FILTER_COLUMNS, "metadata") if c in self.store.idmap_columns]

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        *,
        model: str | None = None,
        force: bool = False,
        device: str | None = None,
        encoder: Any = None,
        gpu: bool | None = False,
        trust_remote_code: bool = False,
        model_dtype: str | None = None,
    ) -> Searcher:
        """Open the current version of `index_dir` (index.faiss, idmap.parquet, index.json), checking they agree.
        An `index add` meanwhile does not disturb it: this searcher answers from the version it opened.

        model: query with this model instead of the recorded one; refused (ModelMismatchError) when its weights
        differ from the index's unless `force`. encoder: an already loaded Encoder (same check).
        gpu: None = FAISS GPUs when present; False = CPU (the default for the Python API); True = require a GPU.
        trust_remote_code: allow the query model (the recorded one too) to run its checkpoint's own Python code.
        model_dtype: the query model's compute dtype (bfloat16, float16, float32; None: bf16 on GPU, fp32 on CPU).
        """

        from uniretrieve.index.hitstore import HitStore
        from uniretrieve.index.meta import IDMAP_NAME, IndexMetaError, read_meta
        from uniretrieve.index.ondisk import read_version_index
        from uniretrieve.index.store import open_version

        d = Path(index_dir)
        held = open_version(d)  # the current version, kept from deletion by a later add until close()
        try:
            v = held.path
            meta = read_meta(v)
            index = read_version_index(v)  # memory-mapped lists for an on-disk index
            store, idmap = HitStore.open(v), None
            if store is None:  # a version written before hit stores: from its id map, in memory
                from uniretrieve.index.idmap import read_idmap

                idmap = read_idmap(v / IDMAP_NAME)
                store = HitStore.from_table(one_chunk(idmap))
            if index.ntotal != meta.num_vectors or store.rows != index.ntotal or index.d != meta.dim:
                raise IndexMetaError(
                    f"{v}: index.faiss holds {index.ntotal} × {index.d}, the id map {store.rows} rows, "
                    f"index.json says {meta.num_vectors} × {meta.dim}; rebuild the index"
                )
            searcher = cls(
                d,
                meta,
                index,
                idmap,
                store=store,
                idmap_path=v / IDMAP_NAME,
                encoder=encoder,
                model=model,
                force=force,
                device=device,
                gpu=gpu,
                trust_remote_code=trust_remote_code,
                model_dtype=model_dtype,
            )
        except BaseException:
            held.close()
            raise
        searcher.version = held
        return searcher

    def close(self) -> None:
        """Release the index version this searcher holds (a later `index add` may then delete it)."""
        if self.version is not None:
            self.version.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the model ---------------------------------------------------------------------------------------------
    @property
    def encoder(self) -> Any:
        """The query encoder: --model if given, else the model recorded in index.json (loaded on first use)."""
        if self._encoder is None:
            from uniretrieve.models.encoder import Encoder

            rec = {**self.meta.model, **self.meta.encoder}
            name = self._model_override or rec.get("source") or rec.get("model_id")
            if not name:
                raise ModelMismatchError(
                    f"{self.dir}/index.json records no model; pass --model to encode queries "
                    f"(vector queries need none)"
                )
            t0 = time.perf_counter()
            adapter = rec.get("adapter") if self._model_override is None else None
            enc = Encoder.from_pretrained(
                name,
                device=self.device,
                adapter=adapter,
                prompt_regime=rec.get("prompt_regime") or "e5v",
                max_text_tokens=rec.get("max_text_tokens"),
                trust_remote_code=self.trust_remote_code,
                dtype=self.model_dtype,
            )
            self.timings["model_load"] = time.perf_counter() - t0
            self._set_encoder(enc)
        return self._encoder

    def _set_encoder(self, enc: Any) -> None:
        check_model(self.meta.model, enc.describe(), self.meta.dim, force=self.force, where=str(self.dir))
        self._encoder = enc

    def encode(self, queries: Sequence[Query]) -> np.ndarray:
        """Embed queries (all terms in one encode call), combining weighted terms → float32 [n, D]."""
        items = [t.item for q in queries for t in q.terms]
        encoder = self.encoder  # loads the model on first use, timed apart as "model_load"
        t0 = time.perf_counter()
        vecs = encoder.encode(items)
        out = np.empty((len(queries), self.meta.dim), np.float32)
        pos = 0
        for i, q in enumerate(queries):
            n = len(q.terms)
            out[i] = combine(vecs[pos : pos + n], [t.weight for t in q.terms])
            pos += n
        self.timings["encode"] = self.timings.get("encode", 0.0) + time.perf_counter() - t0
        return out

    # --- search ------------------------------------------------------------------------------------------------
    def search(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageLike] | None = None,
        vectors: np.ndarray | None = None,
        *,
        queries: Sequence[Query] | None = None,
        k: int = 10,
        where: str | None = None,
        instruction: str | None = None,
    ) -> list[list[Hit]]:
        """Hits for each query, in the order given: texts, then images, then vectors, then `queries`."""
        qs: list[Query] = []
        qs += [Query([Term(1.0, Item(text=t, instruction=instruction))], t) for t in texts or []]
        qs += [Query([Term(1.0, Item(image=im, instruction=instruction))], str(im)) for im in images or []]
        parts = [self.encode(qs)] if qs else []
        if queries:
            parts.append(self.encode(list(queries)))
        if vectors is not None:
            v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
            if v.shape[1] != self.meta.dim:
                raise ValueError(f"query vectors have dim {v.shape[1]}, the index {self.meta.dim}")
            parts.append(v)
        if not parts:
            return []
        return self.search_vectors(np.concatenate(parts), k=k, where=where)

    def search_vectors(
        self, vectors: np.ndarray, *, k: int = 10, where: str | None = None
    ) -> list[list[Hit]]:
        """Hits of float32 [n, D] query vectors: `search_arrays(...).hits()`."""
        return self.search_arrays(vectors, k=k, where=where).hits()

    def search_arrays(self, vectors: np.ndarray, *, k: int = 10, where: str | None = None) -> HitTable:
        """The hits of float32 [n, D] query vectors as arrays (scores, internal ids, id-map rows on first use): no
        per-hit Python work, for callers that serialise columns or need only ids and scores."""
        if k <= 0:
            raise ValueError("k must be positive")
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        t0 = time.perf_counter()
        allowed = self.live
        if where:
            allowed = self.where_mask(where) & (True if allowed is None else allowed)
        if allowed is not None:
            scores, ids = self._search_filtered(q, k, allowed)
        else:
            scores, ids = self._raw_search(q, min(k, self.cpu_index.ntotal))
        self.timings["search"] = self.timings.get("search", 0.0) + time.perf_counter() - t0
        return HitTable(scores, ids, self.store, self.hit_columns)

    def where_mask(self, where: str) -> np.ndarray:
        """Boolean mask over internal ids of the rows passing `where`."""
        t0 = time.perf_counter()
        from uniretrieve.search.filters import WhereFilter

        mask = WhereFilter(where, self.filter_columns).mask(self.idmap)
        self.timings["filter"] = self.timings.get("filter", 0.0) + time.perf_counter() - t0
        return mask

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from uniretrieve.index import gpu as gpu_mod

        if self.torch_exact is not None:
            return self.torch_exact.search(q, k)
        if self.flat_matmul is not None and self.work is self.cpu_index and self.flat_matmul.faster(len(q)):
            return self.flat_matmul.search(q, k)
        return gpu_mod.search_index(self.work, q, k, on_gpu=self.on_gpu, cpu_index=self.cpu_index)


def check_model(
    recorded: dict[str, Any], described: dict[str, Any], dim: int, *, force: bool, where: str
) -> None:
    """Refuse a query model whose dim differs (always) or whose weights differ from the index's (unless forced)."""
    qdim = int(described.get("dim", dim))
    if qdim != dim:
        raise ModelMismatchError(
            f"the query model {described.get('model_id')!r} makes {qdim}-d vectors but {where} "
            f"holds {dim}-d vectors; it cannot search this index"
        )
    rec_hash, new_hash = recorded.get("weight_hash"), described.get("weight_hash")
    same = (
        (rec_hash == new_hash)
        if rec_hash and new_hash
        else recorded.get("model_id") == described.get("model_id")
    )
    if not same and not force:
        raise ModelMismatchError(
            f"{where} was built with model {recorded.get('model_id')!r} (weights {rec_hash or '?'}), but the query "
            f"model is {described.get('model_id')!r} (weights {new_hash or '?'}): their vectors live in different "
            f"spaces and results would be meaningless. Drop --model to use the index's model, or pass --force."
        )


__all__ = ["Hit", "ModelMismatchError", "Searcher", "check_model"]
