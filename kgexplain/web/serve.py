"""``kgexplain serve``: the report's pages, live and read-only, from the embedded store or Neo4j (Starlette).

Paths are the report's (``/index.html``, ``/runs/<id>.html``, ...; ``/`` is the index), each with its JSON twin
(``.json``, datasette's convention). Run pages take ``?page=N`` as well as the report's ``.pN.html`` names; image
pages take ``?layer=L``. Files: ``/files/<artifact path>`` (store artifacts; ``.npy.png`` renders a map) and
``/source/<image id>`` (an Image node's own file). The store is opened read-only and shared by the requests, which
run one at a time on the event loop (the store's connection is not shared across threads); it is opened again when
another process has written it since (a connection reads the embedded store as it was when it was opened).
"""

from __future__ import annotations

import contextlib
import functools
import html
import mimetypes
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from kgexplain.errors import KgExplainError, UsageError
from kgexplain.store import browse
from kgexplain.store import queries as Q
from kgexplain.store.base import GraphStore
from kgexplain.web.render import STATIC, render, to_json
from kgexplain.web.site import (
    Files,
    Site,
    artifact_content,
    artifact_file,
    sendable_image,
    site_path,
    slug,
    unslug,
)


def _files() -> Files:
    return Files(
        artifact=lambda rel: "files/" + quote(rel),
        image=lambda image_id, path: f"source/{slug(image_id)}" if path else None,
    )


class _Live:
    """The store the pages read and the site over it, opened again (``reopen``) when another process has written
    the store since (``GraphStore.version``), so a build, a `localize --record` or a `runs delete` shows on the next
    page load. If the store cannot be opened at that moment (a writer holds it, a write is half done), the pages keep
    the last view and try again on the next request."""

    def __init__(self, store: GraphStore, reopen: Callable[[], GraphStore] | None) -> None:
        self.store, self.reopen, self.owned = store, reopen, False
        self.site = Site(store, _files())
        self.seen = store.version() if reopen is not None else None

    def current(self) -> tuple[GraphStore, Site]:
        if self.reopen is not None and self.store.version() != self.seen:
            try:
                fresh = self.reopen()
            except (KgExplainError, RuntimeError):
                return self.store, self.site
            self.close()
            self.store, self.site, self.owned, self.seen = fresh, Site(fresh, _files()), True, fresh.version()
        return self.store, self.site

    def close(self) -> None:
        """Close a store this view opened itself (the caller closes the one it gave)."""
        if self.owned:
            self.store.close()
            self.owned = False


@functools.lru_cache(maxsize=64)
def _sent(path: str, size: int, mtime_ns: int) -> tuple[bytes, str]:
    """A source image as pages get it (``sendable_image``), remembered while the file stays the same."""
    return sendable_image(Path(path))


def make_app(store: GraphStore, reopen: Callable[[], GraphStore] | None = None) -> Starlette:
    """The app over an open (read-only) store; the caller closes the store. With ``reopen`` (a function that opens
    the store read-only again, e.g. ``StoreSpec.read``) the pages follow what other processes write."""
    live = _Live(store, reopen)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        live.close()

    def page(path: str, request: Request) -> Response:
        db, shared = live.current()
        try:
            if path in ("", "index.html", "index.json"):
                data, ext = shared.index(), "json" if path.endswith(".json") else "html"
                path = "index.html"
            elif path in ("metrics.html", "metrics.json"):
                data, ext = shared.metrics(), path.rsplit(".", 1)[1]
            else:
                kind, node_id, pg, ext = site_path(path)
                asked = request.query_params.get("page", "")
                if asked:
                    if not asked.isdigit():
                        raise UsageError(f"page must be a number, not {asked!r}")
                    pg = int(asked) - 1
                data = shared.get(kind, node_id, max(0, pg), request.query_params.get("layer") or None)
        except KgExplainError as e:
            if path.endswith(".json"):
                return JSONResponse({"error": e.message, "hint": e.hint}, status_code=404)
            body = f"<!doctype html><title>not found</title><p>{html.escape(e.message, quote=False)}</p>"
            return HTMLResponse(body, status_code=404)
        if ext == "json":
            return Response(to_json(data), media_type="application/json")
        return HTMLResponse(render(data, path, db.url))

    async def index(request: Request) -> Response:
        return page("", request)

    async def any_page(request: Request) -> Response:
        return page(request.path_params["path"], request)

    async def static(request: Request) -> Response:
        f = artifact_file(STATIC, request.path_params["name"])
        return FileResponse(f) if f else Response(status_code=404)

    async def files(request: Request) -> Response:
        found = artifact_content(live.current()[0].artifacts.root, request.path_params["path"])
        if isinstance(found, bytes):
            return Response(found, media_type="image/png")
        return FileResponse(found) if found else Response(status_code=404)

    async def source(request: Request) -> Response:
        db = live.current()[0]
        row = browse.image(db, unslug(request.path_params["id"]))
        path = Q.image_path(db, row["path"]) if row else None
        p = Path(path) if path else None
        if p is None or not p.is_file():
            return Response(status_code=404)
        st = p.stat()
        data, suffix = _sent(str(p), st.st_size, st.st_mtime_ns)  # a large photo reduced, as in the report
        return Response(data, media_type=mimetypes.guess_type("x" + suffix)[0] or "application/octet-stream")

    async def root_json(request: Request) -> Response:
        return RedirectResponse("index.json")

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/files/{path:path}", files),
        Route("/source/{id}", source),
        Route("/runs.json", root_json),
        Route("/{path:path}", any_page),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
