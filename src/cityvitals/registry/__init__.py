"""The sensor registry: what kinds of sensor exist and which sensors the city has."""

from cityvitals.registry.kinds import Kind, KindTable, load_kinds

__all__ = ["Kind", "KindTable", "load_kinds"]
