"""The pure core: values and decisions, no I/O, no asyncio, no vendor libraries."""
