"""Bulk data in and out: `roomfeed import` (a platform's history: merchants, stores, staff, products,
past rooms, interactions, orders) and `roomfeed export` (a merchant's own data as CSV).

Every record is read with its domain's own rules (the API's validators), written through the
domain's own write paths, and is idempotent by id. See docs/import.md.
"""
