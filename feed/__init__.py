"""The swipe feed: viewer sessions and the pipeline that composes rooms, events, ranking and alliance."""
