"""events: the event vocabulary, ingest to Kafka, the realtime and archive sinks, dead letters."""
