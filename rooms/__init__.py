"""rooms: merchants, stores and staff, rooms and their lifecycle, products, flash deals, consults, the live-room index."""
