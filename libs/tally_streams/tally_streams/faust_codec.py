"""A faust codec writing the same Avro single-object bytes as the plain producers.

Faust agents and plain confluent-kafka consumers then read and write identical records.
Register once per process: ``register_avro_codecs(catalog)`` makes ``avro:<name>`` codecs
(e.g. ``value_serializer="avro:impression"``). Values are plain dicts.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from .avro import AvroCodec, SchemaCatalog


class FaustAvroCodec(codecs.Codec):
    def __init__(self, avro: AvroCodec, **kwargs: Any) -> None:
        self.avro = avro
        super().__init__(avro=avro, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        return self.avro.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.avro.decode(s)


def register_avro_codecs(catalog: SchemaCatalog) -> list[str]:
    names = []
    for name in catalog.names():
        codec_name = f"avro:{name}"
        codecs.register(codec_name, FaustAvroCodec(catalog.codec(name)))
        names.append(codec_name)
    return names
