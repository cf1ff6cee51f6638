"""`uniretrieve serve`: a search service over an index (FastAPI on uvicorn) and its web page. Imported only by the
`serve` command and by code that builds the app (`uniretrieve.serve.app.create_app`), never by `import uniretrieve`:
fastapi is the optional `serve` extra."""
