"""schemathesis serializers for the request media types it has none for: Parquet and Arrow bodies go
on the wire as the bytes generated for them (``format: binary``), like ``application/octet-stream``;
textual ones outside ``text/`` (JSON Lines) as the text generated for them, like ``text/plain``.
Imported by the fuzz test, and loaded by schemathesis' CLI as its hooks module (SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import schemathesis

from scorer import codecs

BINARY_TYPES = [mt for mt, decoder in codecs.DECODERS.items() if decoder.binary]
schemathesis.serializer.alias(BINARY_TYPES, "application/octet-stream")
TEXT_TYPES = [mt for mt, decoder in codecs.DECODERS.items()
              if not decoder.binary and mt != codecs.JSON and not mt.startswith("text/")]
schemathesis.serializer.alias(TEXT_TYPES, "text/plain")
