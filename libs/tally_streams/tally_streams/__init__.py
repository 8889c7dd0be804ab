"""Tally's Avro/Kafka layer.

`avro` (schema catalog and single-object encoding) is importable without Kafka;
`kafka` holds the confluent-kafka helpers; `faust_codec` the faust codec (imports faust).
"""
