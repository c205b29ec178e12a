"""meshlab: a hands-on course in service-mesh internals, graded against real Envoy."""

__version__ = "0.1.0"
