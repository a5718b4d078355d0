"""`serve http`: the HTTP service. `cli` is the command line; `app` the ASGI routes, `v2` the Open Inference
Protocol, `asgi` and `connection` the uvicorn server, `stdlib_server` the standard-library fallback."""
