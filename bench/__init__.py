"""Hand-run benchmarks of treaty-bot against its peers on a loopback feed farm (see README.md)."""
