"""The operators' and merchants' web console, the ops admin API (metrics, models) and the demo."""
