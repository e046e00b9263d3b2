"""Chaos-suite tests: network faults in namespaces, the userspace shaping proxy."""
