"""cityvitals: watch a city's vital signs and close the loop on what goes wrong.

The package follows the flow in docs/architecture.md: ingest -> locate -> signs ->
watch -> diagnose -> dispose -> evaluate, with the store underneath every stage.
"""

__version__ = "0.1.0"
