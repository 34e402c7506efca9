"""Developer tooling, apart from the runtime packages: the local PostgreSQL, Redis and Kafka
(`roomfeed services`, the tests and the benchmarks start them) and the demo driver (`roomfeed demo`)."""
