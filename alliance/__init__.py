"""The traffic alliance: alliances and membership, attribution codes, contributed visits, the
double-entry exposure ledger, and the exposure scheduler whose boost is a stage of the feed.

Public nouns: `codes.CodeBook`, `attribution.AttributionBook`, `alliances.AllianceBook`,
`ledger.Ledger`, `consumer.AllianceSink`, `scheduler.ExposureScheduler`, `boost.AllianceBoost`.
How it works and why: docs/alliance.md.
"""
