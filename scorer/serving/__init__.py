"""The HTTP server (``scorer serve``)."""
