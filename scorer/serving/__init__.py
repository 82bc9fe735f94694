"""The HTTP server (``scorer serve``): one pure-ASGI stack per process.

- ``process.py``: the processes (one uvicorn server, or a supervisor and N forked workers; drain on SIGTERM;
  with N workers, a reload forks new workers and retires the old ones)
- ``app.py``: the app and its life (background bundle load, shutdown); the stack's layers, outermost first:
  ``context.py`` (request id, metrics, error responses via ``http_errors.py``, drain) and
  ``router.py`` (scoring POSTs straight to ``predict.py``, the rest through the table in ``routes.py``)
- ``predict.py``: the scoring endpoint; ``bodies.py`` receives and inflates its body; ``auth.py`` the token
- ``coalescer.py``: concurrent requests coalesced into one model call (the online side: offline
  ``scorer batch`` is elsewhere)
- ``state.py``: the process's ``ServerState`` (``app.state``): the serving version, held by each request
- ``reload.py``: reloads in one process (watcher, SIGHUP, swap, the old version retired once idle)
"""
