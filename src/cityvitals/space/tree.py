"""The city's tree as nested dicts, for printing and for scripts.

Grid cells can number tens of thousands under one district; ``grid=False`` folds them
into a count on their parent (``grid_cells``) so the tree stays readable.
"""

from __future__ import annotations

from collections import defaultdict


def tree(store, max_depth: int | None = None, *, grid: bool = True) -> list[dict]:
    """Root units (usually the one city) with their descendants nested under ``children``.

    Each node: code, name, level, population, area_m2, n_children, children. ``max_depth``
    counts levels below the roots (0: roots only); cut-off nodes keep ``n_children``.
    With ``grid=False`` grid children are left out and counted in ``grid_cells``.
    """
    units = store.units.frame()
    children: dict[str | None, list[dict]] = defaultdict(list)
    for row in units.iter_rows(named=True):
        node = {
            "code": row["code"],
            "name": row["name"],
            "level": row["level"],
            "population": row["population"],
            "area_m2": row["area_m2"],
        }
        children[row["parent_code"]].append(node)
    codes = set(units["code"].to_list())
    # roots: no parent, or a parent that is not stored (a broken link must still show)
    roots = [n for parent, kids in children.items() if parent is None or parent not in codes for n in kids]

    def fill(node: dict, depth: int) -> dict:
        kids = children.get(node["code"], [])
        node["n_children"] = len(kids)
        if not grid:
            cells = sum(1 for k in kids if k["level"] == "grid")
            if cells:
                node["grid_cells"] = cells
            kids = [k for k in kids if k["level"] != "grid"]
        below = max_depth is None or depth < max_depth
        node["children"] = [fill(k, depth + 1) for k in kids] if below else []
        return node

    return [fill(root, 0) for root in roots]
