"""schemathesis serializers for the request media types it has none for: Parquet and Arrow bodies go
on the wire as the bytes generated for them (``format: binary``), like ``application/octet-stream``.
Imported by the fuzz test, and loaded by schemathesis' CLI as its hooks module (SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import schemathesis

from scorer import codecs

BINARY_TYPES = [mt for mt, decoder in codecs.DECODERS.items() if decoder.binary]
schemathesis.serializer.alias(BINARY_TYPES, "application/octet-stream")
