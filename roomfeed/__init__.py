"""roomfeed plumbing: settings, PostgreSQL/Redis/Kafka clients, auth, HTTP shape, the ASGI app and the CLI.

The product's domains live beside this package (`rooms`, `events`, `ranking`, `alliance`, `feed`);
this package holds only what they all stand on.
"""
