"""Tally's Avro/Kafka layer.

`avro` (schema catalog and single-object encoding) is importable without Kafka, and so is
`records` (one TypedDict per schema, what a typed codec's ``decode`` returns);
`kafka` holds the confluent-kafka helpers; `eos` the exactly-once loop (a transactional step
that commits a stage's effects, changelog records and offsets together; changelog restore;
following a compacted topic); `faust_codec` the faust codec (imports faust).
"""
