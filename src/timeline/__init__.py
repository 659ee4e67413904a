"""timeline: an event-sourced, bitemporal tracker of trade and technology policy."""

__version__ = "0.1.0"
