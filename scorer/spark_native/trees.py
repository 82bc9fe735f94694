"""placeholder: filled by the trees stage compilers"""

from __future__ import annotations

from scorer.spark_native.base import Compiler

COMPILERS: dict[str, Compiler] = {}
