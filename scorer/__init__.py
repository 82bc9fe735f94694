"""scorer: turn a model bundle into a production scoring service.

Public API: the extension base class bundles subclass, the error tree, the version, and the
HTTP client of a running server (``scorer.Client``, imported on first use: ``import scorer`` stays
as light as a bundle's code needs it).
"""

from typing import TYPE_CHECKING, Any

from scorer._version import __version__
from scorer.errors import ScorerClientError, ScorerError
from scorer.preprocessor import CustomPreprocessor

if TYPE_CHECKING:
    from scorer.client import Client, RetryPolicy

__all__ = ["Client", "CustomPreprocessor", "RetryPolicy", "ScorerClientError", "ScorerError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "RetryPolicy"):
        from scorer import client

        return getattr(client, name)
    raise AttributeError(f"module 'scorer' has no attribute {name!r}")
