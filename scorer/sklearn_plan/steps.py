"""Every module of compiled steps, imported for what they register: their ops (to load a stored plan)
and their compilers (to compile a pipeline)."""

from scorer.sklearn_plan import text  # noqa: F401
from scorer.sklearn_plan import preprocess  # noqa: F401
from scorer.sklearn_plan import linear, trees  # noqa: F401
