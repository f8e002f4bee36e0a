"""A city the size of Beijing's grid: 40,625 unit grid cells under communities, streets and districts.

Beijing's grid-management base (domain.md) covers its 16 districts with 40,625 unit grids;
the dashboard and the map endpoint are measured on a city of that size. The grid is H3 at
resolution 10 (about 15,000 m² a cell, the size the national standard asks for) around a
centre; communities are the cells' resolution-8 parents, streets their resolution-7
parents, and districts 16 sectors around the centre. Everything is vectorised (Shapely
coverage unions), so the city builds in seconds, and units are upserted directly: no
simulator run is needed to measure the map.
"""

from __future__ import annotations

import math
import os
import time
from typing import Annotated

import numpy as np
import polars as pl
import shapely
import typer

BEIJING_GRID_UNITS = 40_625


def _cells(n: int, centre: tuple[float, float], resolution: int) -> list[str]:
    import h3

    lon, lat = centre
    c0 = h3.latlng_to_cell(lat, lon, resolution)
    k = int(math.ceil((-3 + math.sqrt(9 + 12 * (n - 1))) / 6)) + 2  # a disk of radius k holds 3k(k+1)+1 cells
    disk = h3.grid_disk(c0, k)
    dist = np.array([h3.grid_distance(c0, c) for c in disk])
    order = np.lexsort((np.array(disk), dist))  # nearest rings first, deterministic within a ring
    return [disk[i] for i in order[:n]]


def build_big_city(store, *, n_grid: int = BEIJING_GRID_UNITS, centre: tuple[float, float] = (116.40, 39.91),
                   districts: int = 16, resolution: int = 10) -> dict:
    """Upsert a city of ``n_grid`` grid cells (and its communities, streets, districts) into ``store``."""
    import h3

    cells = _cells(n_grid, centre, resolution)
    rings = [h3.cell_to_boundary(c) for c in cells]  # (lat, lng) pairs
    coords = np.array([[(p[1], p[0]) for p in r] + [(r[0][1], r[0][0])] for r in rings])
    grid_geoms = shapely.polygons(coords)
    cx, cy = coords[:, :-1, 0].mean(axis=1), coords[:, :-1, 1].mean(axis=1)
    comm_of = np.array([h3.cell_to_parent(c, resolution - 2) for c in cells])
    street_of = np.array([h3.cell_to_parent(c, resolution - 3) for c in cells])
    # a street belongs to the district sector its cells' centre lies in
    streets, s_inv = np.unique(street_of, return_inverse=True)
    s_x = np.bincount(s_inv, cx) / np.bincount(s_inv)
    s_y = np.bincount(s_inv, cy) / np.bincount(s_inv)
    angle = np.arctan2(s_y - centre[1], (s_x - centre[0]) * math.cos(math.radians(centre[1])))
    # sectors of equal street counts (not equal angles), so a small city has no empty district
    # (an empty one has no geometry to merge)
    districts = max(1, min(districts, len(streets)))
    s_district = np.empty(len(streets), int)
    for d, idx in enumerate(np.array_split(np.argsort(angle, kind="stable"), districts)):
        s_district[idx] = d
    # codes in the fixed-width style of the national scheme: 6-digit district, +3 street, +3 community, +3 grid
    d_code = [f"1101{d + 1:02d}" for d in range(districts)]
    s_rank = np.zeros(len(streets), int)
    for d in range(districts):
        idx = np.flatnonzero(s_district == d)
        s_rank[idx] = np.arange(len(idx))
    s_code = np.array([f"{d_code[s_district[i]]}{s_rank[i] + 1:03d}" for i in range(len(streets))])
    comms, c_inv = np.unique(comm_of, return_inverse=True)
    c_street = np.zeros(len(comms), int)
    c_street[c_inv] = s_inv
    c_code = np.empty(len(comms), object)
    for si in range(len(streets)):
        idx = np.flatnonzero(c_street == si)
        c_code[idx] = [f"{s_code[si]}{j + 1:03d}" for j in range(len(idx))]
    g_code = np.empty(len(cells), object)
    order = np.argsort(c_inv, kind="stable")
    counts = np.bincount(c_inv, minlength=len(comms))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(cells), int)
    rank[order] = np.arange(len(cells)) - np.repeat(starts, counts)
    for i in range(len(cells)):
        g_code[i] = f"{c_code[c_inv[i]]}{rank[i] + 1:03d}"

    def merged(groups: np.ndarray, n: int) -> np.ndarray:
        out = np.empty(n, object)
        srt = np.argsort(groups, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=n))])
        for g in range(n):
            out[g] = shapely.coverage_union_all(grid_geoms[srt[bounds[g]:bounds[g + 1]]])
        return out

    comm_geoms = merged(c_inv, len(comms))
    street_geoms = merged(s_inv, len(streets))
    dist_of_cell = s_district[s_inv]
    dist_geoms = merged(dist_of_cell, districts)
    city_geom = shapely.coverage_union_all(dist_geoms)
    pop = 21_000_000 / n_grid

    def frame(codes, names, level, depth, parents, geoms, h3cells=None, members=None) -> pl.DataFrame:
        geoms = np.asarray(geoms, dtype=object)
        cent = shapely.centroid(geoms)
        return pl.DataFrame({
            "code": list(codes), "name": list(names), "level": level, "depth": depth, "parent_code": list(parents),
            "geometry_wkb": list(shapely.to_wkb(geoms)), "centroid_lon": shapely.get_x(cent),
            "centroid_lat": shapely.get_y(cent), "area_m2": shapely.area(geoms) * 111_320.0 ** 2 * math.cos(math.radians(centre[1])),
            "population": (np.ones(len(geoms)) if members is None else members) * pop,
            "h3_cell": list(h3cells) if h3cells is not None else [None] * len(geoms),
        }, schema_overrides={"parent_code": pl.String, "h3_cell": pl.String})

    frames = [
        frame(["110000"], ["北京样例市 Big City"], "city", 0, [None], [city_geom], members=np.array([n_grid])),
        frame(d_code, [f"第{d + 1}区 District {d + 1}" for d in range(districts)], "district", 1, ["110000"] * districts,
              dist_geoms, members=np.bincount(dist_of_cell, minlength=districts)),
        frame(s_code, [f"街道 Street {c[-3:]}·{c[4:6]}" for c in s_code], "street", 2,
              [d_code[d] for d in s_district], street_geoms, members=np.bincount(s_inv)),
        frame(c_code, [f"社区 Community {c[-6:]}" for c in c_code], "community", 3, [s_code[s] for s in c_street],
              comm_geoms, members=np.bincount(c_inv)),
        frame(g_code, [f"网格 Grid {c[-9:]}" for c in g_code], "grid", 4, [c_code[i] for i in c_inv], grid_geoms,
              h3cells=cells),
    ]
    store.units.upsert(pl.concat(frames, how="vertical_relaxed"))
    return {"districts": districts, "streets": len(streets), "communities": len(comms), "grid": len(cells),
            "city": "110000"}


# ---------------------------------------------------------------------------------------------
# ``cityvitals bench api``

def _add_sensors(store, n: int, now, seed: int) -> list[str]:
    """``n`` water-pressure sensors on random grid cells with an hour of minute readings before ``now``."""
    from datetime import timedelta

    import pyarrow as pa

    from cityvitals.ingest import Ingestor

    rng = np.random.default_rng(seed)
    grid = store.frame("SELECT code, centroid_lon, centroid_lat FROM units WHERE level = 'grid' ORDER BY code")
    pick = rng.choice(grid.height, n, replace=False)
    ids = [f"WP{i:06d}" for i in range(n)]
    store.sensors.upsert(pl.DataFrame({
        "id": ids, "kind": "water_pressure", "unit": "MPa", "lon": grid["centroid_lon"].to_numpy()[pick],
        "lat": grid["centroid_lat"].to_numpy()[pick], "unit_code": grid["code"].to_numpy()[pick], "department": "water"}))
    ts = [now - timedelta(minutes=m) for m in range(60, 0, -1)]
    table = pa.table({"sensor_id": np.repeat(ids, len(ts)), "ts": pa.array(ts * n, pa.timestamp("us", tz="UTC")),
                      "value": rng.normal(0.3, 0.01, n * len(ts))})
    Ingestor(store, clock=lambda: now).ingest_table(table, source="bench")
    return ids


def _pcts(xs: list[float]) -> dict:
    a = np.array(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


async def _latency(url: str, key: str, paths: list[str], clients: int, requests: int) -> dict:
    import asyncio

    import httpx

    times: list[float] = []
    errors = 0
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key, "Accept-Encoding": "gzip"},
                                 timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal errors
            for i in todo:
                t0 = time.perf_counter()
                r = await client.get(paths[i % len(paths)])
                await r.aread()
                times.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return _pcts(times) | {"errors": errors, "requests_per_s": round(len(times) / wall, 1)}


def _stream_delay(url: str, key: str, sensor: str, now, n: int) -> dict:
    """Seconds from sending a reading (POST) to its ``readings`` event arriving on an open stream."""
    import threading
    from datetime import timedelta

    import httpx

    arrived: list[float] = []
    got = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
            with c.stream("GET", "/api/v1/stream", params={"linger": 20}) as s:
                for line in s.iter_lines():
                    if line.startswith("event: hello"):
                        ready.set()
                    if line.startswith("event: readings"):
                        arrived.append(time.perf_counter())
                        got.set()
                        if len(arrived) >= n:
                            return

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    ready.wait(30)
    delays = []
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
        for i in range(n):
            got.clear()
            t0 = time.perf_counter()
            c.post("/api/v1/readings", json=[{"sensor_id": sensor, "ts": (now + timedelta(seconds=i + 1)).isoformat(),
                                              "value": 0.3}])
            if not got.wait(30):
                break
            delays.append(arrived[-1] - t0)
    th.join(5)
    return _pcts(delays) if delays else {"n": 0}


def _render(url: str, key: str, chromium: str, *, timeout_s: float = 120.0) -> dict:
    """Open the dashboard in headless Chromium and time 'All grid cells': request to painted map.

    Both ways of drawing a big layer are timed in the same run: ``geojson`` (the baseline: a
    MapLibre GeoJSON fill layer, ``?layer=geojson``) and ``canvas`` (the dashboard's default: a
    Canvas 2D overlay). ``arrival_ms`` is the part after the response is in hand: decode,
    layout and the map painted (GeoJSON: until MapLibre is idle, its tiles drawn; canvas: until
    the frame with the overlay drawn, then ``idle_after_ms`` more until MapLibre is idle).
    Every wait is bounded by ``timeout_s`` so a map that never settles fails the benchmark
    instead of hanging it.
    """
    from playwright.sync_api import sync_playwright

    from cityvitals.api.loopback import CHROMIUM_ARGS as args

    ms = int(timeout_s * 1000)
    out: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        for mode in ("geojson", "canvas"):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/?layer={mode}#key={key}")
            page.wait_for_function("() => typeof S !== 'undefined' && S.view && document.getElementById('map').dataset.renderMs",
                                   timeout=ms)
            res: dict = {}
            for attempt in ("first", "again"):
                page.evaluate("() => { document.getElementById('map').dataset.renderMs = ''; }")
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                page.click("#all-grid")
                page.wait_for_function("() => document.getElementById('map').dataset.renderMs && S.view.n_units > 40000",
                                       timeout=ms)
                wall = round((time.perf_counter() - t0) * 1000)
                # the overlay resolves at the painted frame; MapLibre settling its own sources after
                # it is waited for here (bounded) and reported as idle_after_ms
                page.wait_for_function("() => S.mapIdle !== false", timeout=ms)
                res[attempt] = {"wall_ms": wall, "load_avg": round(load0, 1),
                                **{k: round(v) for k, v in page.evaluate("() => S.timing").items()},
                                "idle_after_ms": page.evaluate("() => S.overlayTiming ? Math.round(S.overlayTiming.idle_after_ms) : null"),
                                "renderer": page.get_attribute("#map", "data-renderer")}
            res["features"] = page.evaluate("() => S.view.geojson.features.length")
            res["rendered_units"] = page.evaluate("() => renderedUnits()")
            out[mode] = res
            page.close()
        browser.close()
    return out


def _serving(app):
    """Run ``app`` with uvicorn on a free loopback port in a thread; a context manager yielding its URL."""
    from cityvitals.api.loopback import serve_in_thread

    return serve_in_thread(app)


def _latencies(url: str, key: str, dense: str, details: list[str], clients: int, requests: int,
               dense_requests: int) -> dict:
    """p50/p99 per endpoint, with the process's CPU seconds (server and clients share it) and the load."""
    import asyncio
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    out = {}
    for name, paths, n in (("map_city", ["/api/v1/map?format=compact"], requests), ("map_all_grid_cells", [dense], dense_requests),
                           ("unit_detail", details, requests)):
        c0, load0 = cpu(), os.getloadavg()[0]
        out[name] = asyncio.run(_latency(url, key, paths, clients, n)) | {
            "cpu_s": round(cpu() - c0, 2), "load_avg": round(load0, 1)}
    return out


def run_bench(*, clients: int = 50, requests: int = 500, dense_requests: int = 100, sensors: int = 2000,
              stream_events: int = 30, render: bool = True, baseline: bool = True, latency: bool = True,
              seed: int = 7, n_grid: int = BEIJING_GRID_UNITS) -> dict:
    """``baseline``: also measure the API with its state cache off (every request computes its
    map state, as before the cache) in the same run, on the same store."""
    import gzip
    import shutil
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    import httpx

    from cityvitals.api import create_app
    from cityvitals.bench._machine import machine
    from cityvitals.store import open_store

    now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    out: dict = {"machine": machine(), "clients": clients}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "home")
        try:
            t0 = time.perf_counter()
            out["city"] = build_big_city(store, n_grid=n_grid)
            ids = _add_sensors(store, sensors, now, seed)
            out["build_s"] = round(time.perf_counter() - t0, 1)
            key = store.users.add("bench", "admin")
            dense = "/api/v1/map?depth=4&format=compact"
            grid = store.frame("SELECT code FROM units WHERE level = 'grid' ORDER BY code")["code"].to_list()
            rng = np.random.default_rng(seed)
            details = [f"/api/v1/units/{grid[i]}" for i in rng.choice(len(grid), 200, replace=False)]
            if baseline and latency:
                with _serving(create_app(store, clock=lambda: now, poll_interval=2.0, state_ttl_s=0)) as url:
                    out["latency_no_cache"] = _latencies(url, key, dense, details, clients, requests, dense_requests)
            app = create_app(store, clock=lambda: now, poll_interval=2.0)
            with _serving(app) as url:
                h = {"X-API-Key": key}
                with httpx.Client(base_url=url, headers=h, timeout=120) as c:
                    t0 = time.perf_counter()
                    first = c.get(dense, headers={"Accept-Encoding": "identity"})
                    out["dense_first_request_s"] = round(time.perf_counter() - t0, 2)
                    geo = c.get("/api/v1/map?depth=4", headers={"Accept-Encoding": "identity"}).content
                    out["payload"] = {
                        "units": first.json()["n_units"], "compact_bytes": len(first.content),
                        "compact_gzip_bytes": len(gzip.compress(first.content, 5)),
                        "geojson_bytes": len(geo), "geojson_gzip_bytes": len(gzip.compress(geo, 5)),
                        "city_level_bytes": len(c.get("/api/v1/map?format=compact", headers={"Accept-Encoding": "identity"}).content)}
                if latency:
                    out["latency"] = _latencies(url, key, dense, details, clients, requests, dense_requests)
                    out["latency"]["cache"] = {"hits": app.state.ctx.states.hits, "misses": app.state.ctx.states.misses,
                                               "stale_served": app.state.ctx.states.stale_served}
                    out["stream_delay"] = _stream_delay(url, key, ids[0], now, stream_events)
                chromium = shutil.which("chromium") or "/usr/bin/chromium"
                if render and Path(chromium).exists():
                    out["render"] = _render(url, key, chromium)
        finally:
            store.close()
    return out


def bench_api(
    clients: Annotated[int, typer.Option(min=1, max=500, help="Concurrent clients.")] = 50,
    requests: Annotated[int, typer.Option(min=10, help="Requests per endpoint (city map, unit detail).")] = 500,
    dense_requests: Annotated[int, typer.Option(min=10, help="Requests for the whole-city grid layer.")] = 100,
    sensors: Annotated[int, typer.Option(min=10, help="Sensors with an hour of readings.")] = 2000,
    grid: Annotated[int, typer.Option(min=100, help="Grid cells in the city (Beijing: 40,625).")] = BEIJING_GRID_UNITS,
    render: Annotated[bool, typer.Option(help="Also time the map in headless Chromium (if installed).")] = True,
    baseline: Annotated[bool, typer.Option(help="Also measure the API with its state cache off, in the same run.")] = True,
    latency: Annotated[bool, typer.Option(help="Measure API latency and the event stream (--no-latency: payload "
                                                "and render only, for a quick look at the map).")] = True,
    json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object for scripts.")] = False,
) -> None:
    """API latency (p50/p99) under concurrent clients, event-stream delay, map payload and render time."""
    from rich.table import Table

    from cityvitals.cli._common import console, emit_json

    with console.status(f"building a {grid:,}-cell city and measuring the API…"):
        r = run_bench(clients=clients, requests=requests, dense_requests=dense_requests, sensors=sensors,
                      render=render, baseline=baseline, latency=latency, n_grid=grid)
    if json:
        emit_json(r)
        return
    t = Table("measure", "value", title=f"bench api ({r['clients']} concurrent clients, {r['city']['grid']:,} grid cells)")
    for label, part in (("no state cache (baseline)", "latency_no_cache"), ("state cache", "latency")):
        for name, v in r.get(part, {}).items():
            if name == "cache":
                t.add_row(f"{label}: hits / misses / stale served", f"{v['hits']} / {v['misses']} / {v['stale_served']}")
                continue
            t.add_row(f"{label}: {name}", f"p50 {v['p50_ms']} ms · p99 {v['p99_ms']} ms · {v['requests_per_s']} req/s · "
                                          f"{v['n']} requests, {v['errors']} errors · CPU {v['cpu_s']} s · load {v['load_avg']}")
    if "stream_delay" in r:
        s = r["stream_delay"]
        t.add_row("reading → SSE event", f"p50 {s.get('p50_ms')} ms · p99 {s.get('p99_ms')} ms ({s['n']} readings)")
    p = r["payload"]
    t.add_row("all-grid map payload", f"compact {p['compact_bytes']:,} B (gzip {p['compact_gzip_bytes']:,}) · GeoJSON "
                                      f"{p['geojson_bytes']:,} B (gzip {p['geojson_gzip_bytes']:,})")
    t.add_row("city-level map payload", f"{p['city_level_bytes']:,} B")
    t.add_row("all-grid map, first request (cold geometry cache)", f"{r['dense_first_request_s']} s")
    for mode, res in r.get("render", {}).items():
        for k in ("first", "again"):
            v = res[k]
            t.add_row(f"Chromium render ({mode}), {k}",
                      f"{v['wall_ms']} ms click → painted (fetch {v['fetch_ms']}, decode {v['decode_ms']}, plot {v['plot_ms']} ms; "
                      f"data → painted {v['arrival_ms']} ms; {v['renderer']}; load {v['load_avg']})")
        t.add_row(f"units drawn on screen ({mode})", f"{res.get('rendered_units')} of {res['features']:,}")
    t.add_row("machine", f"{r['machine']['cpu']} · {r['machine']['cores']} cores")
    console.print(t)
