"""The ``locate`` stage: the city's tree of spatial units and point → unit assignment.

- ``import_layer`` reads an administrative GeoJSON layer and nests it in the tree.
- ``build_grid`` puts H3 cells (the minimum units) under the finest polygons.
- ``Locator`` assigns whole columns of points to units; ``tree`` shows the hierarchy.
"""

from cityvitals.space.grid import build_grid
from cityvitals.space.layers import import_layer
from cityvitals.space.locate import Locator
from cityvitals.space.tree import tree

__all__ = ["Locator", "build_grid", "import_layer", "tree"]
