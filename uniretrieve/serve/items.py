"""What the service knows about the items of one index version: their id-map rows, where their images lie (only
inside the indexed corpus), and their stored vectors (read exactly from their shards, for "more like this")."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uniretrieve.serve.errors import ApiError

HIDDEN_COLUMNS = ("shard",)
"""Id-map columns never answered: the shard's absolute path names the server's file system."""
IMAGE_MODALITIES = ("image", "image_text")


@dataclass(frozen=True)
class Corpus:
    """The image folder an embedding directory was encoded from (its manifest's `input`)."""

    root: Path
    """Resolved; every image served must resolve inside it."""


def corpus_of(shard_dir: Path) -> Corpus | None:
    """The image-folder corpus of a shard directory, None when it was a table (sources are `file:row`) or unknown."""
    from uniretrieve.embed.manifest import ManifestError, read_manifest

    try:
        m = read_manifest(shard_dir)
    except (ManifestError, OSError):
        return None
    inp = (m.input if m is not None else None) or {}
    if inp.get("kind") != "images" or not inp.get("path"):
        return None
    return Corpus(Path(inp["path"]).resolve())


def inside(root: Path, relative: str) -> Path | None:
    """`root / relative` if it is a plain relative path that resolves (symlinks followed) inside `root` to a
    file; None for absolute paths, `..` parts, or anything escaping the root."""
    rel = Path(relative)
    if not relative or rel.is_absolute() or ".." in rel.parts or "\\" in relative or "\x00" in relative:
        return None
    try:
        path = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return path if path.is_relative_to(root) and path.is_file() else None


class ItemView:
    """Item rows, image paths and stored vectors of one searcher's index version."""

    def __init__(self, searcher: Any) -> None:
        from uniretrieve.index.store import version_name

        self.searcher = searcher
        self.idmap: pa.Table = searcher.idmap
        self.size = len(self.idmap)
        held = getattr(searcher, "version", None)
        self.version = version_name(held.version.number) if held is not None else "v-000000"
        names = self.idmap.column_names
        self.live = searcher.live if searcher.live is not None else np.ones(self.size, dtype=bool)
        self._corpora: dict[str, Corpus | None] = {}
        """Shard file → the image-folder corpus its directory was encoded from (None: none)."""
        if "shard" in names:
            for shard in pc.unique(self.idmap.column("shard")).to_pylist():
                if shard:
                    self._corpora[shard] = corpus_of(Path(shard).parent)
        self.has_image = self._image_mask()
        self._shard_sets: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.modalities = (
            sorted(m for m in pc.unique(self.idmap.column("modality")).to_pylist() if m)
            if "modality" in names
            else []
        )

    def _image_mask(self) -> np.ndarray:
        """Rows whose item is an image of an image-folder corpus (whether the file is still there is checked when
        it is asked for). Columnar: no Python object per row, whatever the index size."""
        folders = [shard for shard, corpus in self._corpora.items() if corpus is not None]
        if not folders or not {"modality", "source"} <= set(self.idmap.column_names):
            return np.zeros(self.size, dtype=bool)
        t = self.idmap
        mask = pc.and_(
            pc.and_(
                pc.is_in(t.column("modality"), pa.array(IMAGE_MODALITIES)),
                pc.is_in(t.column("shard"), pa.array(folders, pa.string())),
            ),
            pc.greater(pc.utf8_length(t.column("source")), 0),
        )
        return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)

    def _cell(self, column: str, internal_id: int) -> Any:
        return self.idmap.column(column)[internal_id].as_py()

    # --- rows --------------------------------------------------------------------------------------------------
    def check(self, internal_id: int) -> None:
        if not 0 <= internal_id < self.size:
            raise ApiError(404, f"no item {internal_id}: this index holds internal ids 0 to {self.size - 1}")

    def check_live(self, internal_id: int) -> None:
        self.check(internal_id)
        if not self.live[internal_id]:
            raise ApiError(
                404,
                f"item {internal_id} was replaced by an update of the same id; look it up with /items?id=",
            )

    def row(self, internal_id: int) -> dict[str, Any]:
        """The id-map row of an item as JSON (404 for an unknown or replaced one)."""
        self.check_live(internal_id)
        row = self.idmap.slice(internal_id, 1).to_pylist()[0]
        for name in HIDDEN_COLUMNS:
            row.pop(name, None)
        row.pop("deleted", None)
        row["metadata"] = _json_or_raw(row.get("metadata"))
        row["item_url"] = f"/items/{internal_id}"
        row["image_url"] = self.image_url(internal_id)
        return row

    def lookup(self, item_id: str) -> int:
        """The live internal id of `item_id` (404 when no live row has it)."""
        hit = pc.equal(self.idmap.column("id"), pa.scalar(item_id, pa.string())).to_numpy(
            zero_copy_only=False
        )
        found = np.flatnonzero(hit & self.live)
        if not len(found):
            raise ApiError(404, f"no item with id {item_id!r} in this index")
        return int(found[0])

    def image_url(self, internal_id: int) -> str | None:
        return f"/items/{internal_id}/image" if self.has_image[internal_id] else None

    # --- images ------------------------------------------------------------------------------------------------
    def image_path(self, internal_id: int) -> Path:
        """The item's image file, resolved inside its corpus folder; 404 otherwise (no image, a path with `..`,
        absolute, or a symlink leaving the folder)."""
        self.check(internal_id)
        if not self.has_image[internal_id]:
            raise ApiError(404, f"item {internal_id} has no image in the indexed corpus")
        corpus = self._corpora[self._cell("shard", internal_id)]
        assert corpus is not None
        path = inside(corpus.root, self._cell("source", internal_id))
        if path is None:
            raise ApiError(
                404,
                f"the image of item {internal_id} is not a file inside the indexed corpus folder "
                "(missing, or its path leaves the folder)",
            )
        return path

    def thumbnail(self, internal_id: int, size: int, max_pixels: int | None) -> tuple[bytes, str]:
        """A JPEG of the item's image no larger than size × size, decoded under the pixel cap."""
        from uniretrieve.models.images import ImageLoadError, load_image

        path = self.image_path(internal_id)
        try:
            im = load_image(path, limit=max_pixels)
        except ImageLoadError as exc:
            status = 413 if "pixel cap" in exc.reason else 422
            raise ApiError(status, f"the image of item {internal_id} cannot be shown: {exc.reason}") from None
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        return buf.getvalue(), "image/jpeg"

    # --- stored vectors ----------------------------------------------------------------------------------------
    def stored_vector(self, internal_id: int) -> np.ndarray:
        """The item's vector exactly as its shard stores it (float32 [D]); IVF-PQ codes cannot give it back."""
        from uniretrieve.embed.manifest import ManifestError

        self.check_live(internal_id)
        rows = self.idmap.slice(internal_id, 1).to_pylist()[0]
        shard = rows.get("shard")
        if not shard or rows.get("row") is None:
            raise ApiError(
                400, f"item {internal_id} was indexed from an in-memory array: no shard stores its vector"
            )
        try:
            ss, start = self._shard_set(str(shard))
            got = ss.read_rows([start + int(rows["row"])], columns=("embedding", "id"))
        except (ManifestError, OSError, IndexError, KeyError) as exc:
            raise ApiError(
                409,
                f"the stored vector of item {internal_id} cannot be read from its shard ({exc}); the shard folder "
                "changed since indexing: run `uniretrieve index add` or rebuild",
            ) from None
        if got.column("id")[0].as_py() != rows["id"]:
            raise ApiError(
                409,
                f"the shard row of item {internal_id} now holds another item; the shard folder was re-encoded "
                "since indexing: run `uniretrieve index add` or rebuild",
            )
        from uniretrieve.embed.schema import arrow_to_vectors

        return np.ascontiguousarray(arrow_to_vectors(got.column("embedding"), ss.dim)[0], dtype=np.float32)

    def _shard_set(self, shard: str) -> tuple[Any, int]:
        """The opened shard directory of `shard` (cached for this version) and the shard's first global row."""
        from uniretrieve.embed.reader import open_shards

        d = str(Path(shard).parent)
        with self._lock:
            ss = self._shard_sets.get(d)
            if ss is None:
                ss = self._shard_sets[d] = open_shards(d)
        for ref in ss.shards:
            if str(ref.path.resolve()) == shard:
                return ss, ref.start
        raise KeyError(f"{Path(shard).name} is no longer listed in {d}/manifest.json")


def _json_or_raw(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}
