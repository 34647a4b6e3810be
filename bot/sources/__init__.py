"""Fetching and reading the outside world: HTTP, feeds, calendars."""
