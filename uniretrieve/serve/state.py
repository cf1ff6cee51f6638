"""The index version being served, and the live swap to a newer one.

A request leases the current version for its whole life (`IndexHolder.lease`); the watcher thread notices a new
version behind the index's CURRENT pointer, opens it (reusing the loaded query encoder: no model reload), and swaps
it in under a lock. Requests that started on the old version finish on it; the old version is closed (its reader
lock released, so the next `index add` may delete its folder) when its last request ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniretrieve.serve.config import ServeConfig
from uniretrieve.serve.errors import ApiError
from uniretrieve.serve.items import ItemView

log = logging.getLogger("uniretrieve.serve")


def open_searcher(cfg: ServeConfig, encoder: Any = None) -> Any:
    """The current version of `cfg.index` as a Searcher with its query model loaded (`encoder`: reuse that one)."""
    from uniretrieve.search.searcher import Searcher

    searcher = Searcher.load(
        cfg.index,
        model=cfg.model,
        force=cfg.force,
        device=cfg.device,
        encoder=encoder,
        gpu=False,
        trust_remote_code=cfg.trust_remote_code,
        model_dtype=cfg.model_dtype,
    )
    try:
        searcher.encoder  # noqa: B018 - load the model now, not on the first query
    except BaseException:
        searcher.close()
        raise
    return searcher


class Served(ItemView):
    """One open index version and how many requests are using it."""

    def __init__(self, searcher: Any) -> None:
        super().__init__(searcher)
        self.users = 0
        self.retired = False


class IndexHolder:
    def __init__(self, cfg: ServeConfig, searcher: Any = None) -> None:
        self.cfg = cfg
        self.root = Path(cfg.index)
        self._lock = threading.Lock()
        self.current: Served | None = None
        self.problem: str | None = None
        """Why no version can be served (answered as 503), None while one is."""
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if searcher is not None:
            self.current = Served(searcher)
        else:
            self.refresh()

    # --- requests ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator[Served]:
        """The current version, held until the block ends (a swap meanwhile does not close it)."""
        with self._lock:
            served = self.current
            if served is None:
                raise ApiError(503, f"the index cannot be loaded: {self.problem or 'not loaded yet'}")
            served.users += 1
        try:
            yield served
        finally:
            with self._lock:
                served.users -= 1
                close = served.retired and served.users == 0
            if close:
                served.searcher.close()

    # --- versions ----------------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Swap in the index's current version if it is not the one served; True when it swapped. A version that
        cannot be opened leaves the served one in place (and is tried again at the next check)."""
        from uniretrieve.index.store import current_version, version_name

        cur = self.current
        try:
            if cur is not None and version_name(current_version(self.root).number) == cur.version:
                return False
            searcher = open_searcher(self.cfg, cur.searcher.encoder if cur is not None else None)
        except Exception as exc:  # a torn or removed version, a bad pointer: keep serving what we have
            self.problem = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("index %s: cannot open its current version: %s", self.root, self.problem)
            return False
        self.swap(searcher)
        return True

    def swap(self, searcher: Any) -> None:
        new = Served(searcher)
        with self._lock:
            old, self.current = self.current, new
            self.problem = None
            self.swaps += old is not None
            close = old is not None and old.users == 0
            if old is not None:
                old.retired = True
        if old is not None:
            log.info("index %s: now serving %s (was %s)", self.root, new.version, old.version)
        if close:
            assert old is not None
            old.searcher.close()

    # --- the watcher -------------------------------------------------------------------------------------------
    def start_watching(self) -> None:
        if self.cfg.watch_interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="uniretrieve-index-watcher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.watch_interval):
            try:
                self.refresh()
            except Exception:  # never let the watcher die
                log.exception("index watcher")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            cur, self.current = self.current, None
        if cur is not None:
            cur.searcher.close()
