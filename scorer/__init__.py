"""scorer: turn a model bundle into a production scoring service.

Public API: the extension base class bundles subclass, the error tree, and the version.
"""

from scorer._version import __version__
from scorer.errors import ScorerError
from scorer.preprocessor import CustomPreprocessor

__all__ = ["CustomPreprocessor", "ScorerError", "__version__"]
