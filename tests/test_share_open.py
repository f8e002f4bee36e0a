"""Open data end to end: leak test over every export and public endpoint, audit tamper, erasure, DP and budget.

One small simulated city is loaded once per module; its reports get extra records with
personal data in every free-text and structured field, and cases are opened from them
(dispose), so the special tier holds real-shaped personal data.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from cityvitals.share.catalog import catalogue
from cityvitals.share.pii import find_pii
from cityvitals.store import open_store

LEAK_KINDS = ["resident_id", "bank_card", "mobile", "landline", "email", "plate", "name"]
EXTRA = [
    {"name": "欧阳娜娜", "mobile": "13916668888", "resident_id": "310104198801011234", "email": "nana.ouyang@example.cn",
     "address": "漕溪北路595号12室"},
    {"name": "Li Lei", "mobile": "18621235555", "resident_id": "310104199002024321", "email": "li.lei@example.com",
     "address": "88 Fenghe Road, Apt 5"},
]


def _fix_id(rid: str) -> str:
    from cityvitals.sim.pii import gb11643_check

    return rid[:17] + gb11643_check(rid[:17])


def _augment(path: Path) -> list[dict]:
    """Append reports with personal data in every field, in Chinese and English."""
    lines = [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]
    base = lines[0]
    extra = []
    for i, p in enumerate(EXTRA):
        p = {**p, "resident_id": _fix_id(p["resident_id"])}
        EXTRA[i] = p
        for j in range(3):
            text = (f"我是{p['name']}，电话{p['mobile']}，身份证{p['resident_id']}，邮箱{p['email']}，家住{p['address']}，"
                    f"座机021-6438123{j}，银行卡6222021234567890128，车牌沪B·7K3Q{j}，位置31.23041{j}, 121.47370{j}。"
                    if i == 0 else
                    f"I am {p['name']}, call me on {p['mobile']}, ID {p['resident_id']}, mail {p['email']}, "
                    f"I live at {p['address']}. Car 沪B·7K3Q{j} blocks the gate.")
            doc = {**base, "id": f"RPT-9{i}{j:04d}", "text": text, "plate": f"沪B·7K3Q{j}", "category": "illegal_parking",
                   "service_code": "TR05", "reporter": {"name": p["name"], "mobile": p["mobile"],
                                                        "resident_id": p["resident_id"], "gender": "F",
                                                        "email": p["email"], "address": p["address"]}}
            extra.append(doc)
    with path.open("a", encoding="utf-8") as f:
        for d in extra:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return lines + extra


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from cityvitals.sim.load import load_folder
    from cityvitals.sim.run import run_simulation

    root = tmp_path_factory.mktemp("share")
    run_simulation(root / "sim", scenario="water_main_burst,traffic_accident", duration="6h", seed=5,
                   city_sensors=300, city_districts=3, interval="600s")
    home = root / "home"
    with open_store(home) as store:
        load_folder(store, root / "sim")
    reports = _augment(home / "sim" / "reports.ndjson")
    cases = False
    try:
        from cityvitals.dispose.desk import CaseDesk
        from cityvitals.dispose.reports import import_reports

        with open_store(home) as store:
            import_reports(CaseDesk(store), home / "sim" / "reports.ndjson")
        cases = True
    except ImportError:
        pass
    return {"root": root, "home": home, "reports": reports, "cases": cases}


@pytest.fixture
def home(city, tmp_path):
    """A private copy of the loaded home, so tests that change it do not disturb the others."""
    dst = tmp_path / "home"
    shutil.copytree(city["home"], dst)
    return dst


def _secrets(reports: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"strong": set(), "names": set(), "coords": set()}
    for r in reports:
        rep = r.get("reporter") or {}
        for k in ("mobile", "resident_id", "email"):
            if rep.get(k):
                out["strong"].add(rep[k])
        if r.get("plate"):
            out["strong"].add(r["plate"])
        if rep.get("name"):
            out["names"].add(rep["name"])
        out["coords"].add(f"{r['lon']}")
    out["strong"] |= {"6222021234567890128", "021-64381230", "31.230410"}
    return out


def _pq_text(path: Path) -> str:
    df = pl.read_parquet(path)
    return df.drop([c for c, t in df.schema.items() if t == pl.Binary]).write_csv()


def _scan(text: str, secrets: dict[str, set[str]], public_text: str) -> list[str]:
    """Every personal value or recognised piece of personal data in ``text``."""
    hits = [s for s in secrets["strong"] if s in text]
    # names: only those that are not part of the public vocabulary (place names etc.)
    hits += [n for n in secrets["names"] if n in text and n not in public_text]
    hits += [c for c in secrets["coords"] if c in text and re.search(r"(?<![0-9])" + re.escape(c) + r"(?![0-9])", text)]
    hits += [f"{h.kind}:{h.value}" for h in find_pii(text, LEAK_KINDS)]
    return hits


def test_leak_every_export_and_public_endpoint(city, home, tmp_path):
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app
    from cityvitals.share.export import export_dataset

    secrets = _secrets(city["reports"])
    outputs: dict[str, str] = {}
    with open_store(home) as store:
        units_text = " ".join(store.frame("SELECT name FROM units")["name"].drop_nulls().to_list())
        seen = {"reports": 0, "cases": 0}
        for ds in catalogue():
            for fmt in ("csv", "parquet", "geojson"):
                out = tmp_path / f"{ds.id}.{fmt}"
                try:
                    res = export_dataset(store, ds.id, fmt, out)
                except Exception as exc:  # only "not available yet" is acceptable
                    assert "not available" in str(exc), (ds.id, exc)
                    continue
                if ds.id in seen:
                    seen[ds.id] = max(seen[ds.id], res["rows"])
                outputs[f"export {ds.id}.{fmt}"] = (_pq_text(out) if fmt == "parquet"
                                                    else out.read_text("utf-8"))
        assert seen["reports"] > 0
        if city["cases"]:
            assert seen["cases"] > 0
        app = create_app(store, poll_interval=None, dashboard=False)
        with TestClient(app) as client:
            for path in ("/opendata/v1/catalog", "/opendata/v1/datasets", "/api/v1/public/health"):
                r = client.get(path)
                assert r.status_code == 200, path
                outputs[path] = r.text
            for ds in catalogue():
                for fmt in ("json", "geojson", "csv"):
                    r = client.get(f"/opendata/v1/datasets/{ds.id}", params={"format": fmt, "limit": 100000})
                    assert r.status_code in (200, 404), (ds.id, r.text)
                    outputs[f"GET {ds.id} {fmt}"] = r.text
            assert client.get("/opendata/v1/datasets/reports").json()["total"] > 0
    leaks = {k: _scan(v, secrets, units_text) for k, v in outputs.items()}
    assert {k: v for k, v in leaks.items() if v} == {}
    # the free text is still useful: the problem survives desensitisation
    assert "违停" in outputs["export reports.csv"] or "parked" in outputs["export reports.csv"]


def test_reads_of_personal_data_are_logged_and_need_a_purpose(home, tmp_path):
    from cityvitals.errors import InputError
    from cityvitals.share import audit
    from cityvitals.share.export import export_dataset
    from cityvitals.share.views import view

    with open_store(home) as store:
        with pytest.raises(InputError, match="purpose"):
            view(store, "reports", "internal")
        v = view(store, "reports", "research", actor="zhang", purpose="flood study 2024")
        assert "reporter_id" in v.frame.columns and v.frame["reporter_id"].str.starts_with("p_").all()
        export_dataset(store, "reports", "csv", tmp_path / "r.csv", audience="internal", actor="li", purpose="call back")
        log = audit.entries(store)
        assert [(e["actor"], e["purpose"]) for e in log[:2]] == [("li", "call back"), ("zhang", "flood study 2024")]
        assert audit.verify(store)["ok"]


def _cli() -> typer.Typer:
    from cityvitals.cli.share import audit_app, datasets, erase_cmd, export_cmd

    app = typer.Typer()
    app.command("datasets")(datasets)
    app.command("export")(export_cmd)
    app.add_typer(audit_app, name="audit")
    app.command("erase")(erase_cmd)
    return app


def test_audit_verify_detects_edit_and_deletion(home):
    from cityvitals.share import audit

    runner = CliRunner()
    with open_store(home) as store:
        for i in range(5):
            audit.record(store, actor=f"u{i}", action="read", dataset="reports", fields=["reporter_mobile"],
                         purpose=f"case {i}", records=1)
    r = runner.invoke(_cli(), ["audit", "verify", "--home", str(home)])
    assert r.exit_code == 0 and "ok: 5 entries" in r.output
    r = runner.invoke(_cli(), ["audit", "list", "--home", str(home), "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)["entries"]) == 5
    # edit
    with open_store(home) as store:
        store.con.execute("UPDATE share_access_log SET purpose = 'nothing to see' WHERE seq = 3")
    r = runner.invoke(_cli(), ["audit", "verify", "--home", str(home)])
    assert r.exit_code == 1 and "row 3 was edited" in r.output
    with open_store(home) as store:
        store.con.execute("UPDATE share_access_log SET purpose = 'case 2' WHERE seq = 3")
        assert audit.verify(store)["ok"]
        # deletion in the middle
        row = store.share._rows("SELECT * FROM share_access_log WHERE seq = 2")[0]
        store.con.execute("DELETE FROM share_access_log WHERE seq = 2")
        assert "row 2 is missing" in audit.verify(store)["problem"]
        store.con.execute("INSERT INTO share_access_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(row.values()))
        assert audit.verify(store)["ok"]
        # deleting the newest row leaves a valid shorter chain; the anchor catches it
        store.con.execute("DELETE FROM share_access_log WHERE seq = 5")
    r = runner.invoke(_cli(), ["audit", "verify", "--home", str(home), "--json"])
    assert r.exit_code == 1 and "deleted" in json.loads(r.output)["problem"]


def _store_texts(store) -> list[str]:
    out = []
    with store.lock:
        cols = store.con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                 "WHERE data_type = 'VARCHAR' AND table_schema = 'main'").fetchall()
    for t, c in cols:
        out += [v for v in store.frame(f'SELECT "{c}" AS v FROM "{t}" WHERE "{c}" IS NOT NULL')["v"].to_list()]
    return out


def test_erase_person_everywhere(city, home, tmp_path):
    from cityvitals.share.export import export_dataset

    p = EXTRA[0]
    with open_store(home) as store:
        export_dataset(store, "reports", "csv", tmp_path / "research.csv", audience="research", actor="zhang",
                       purpose="study")
        export_dataset(store, "reports", "parquet", tmp_path / "internal.parquet", audience="internal", actor="li",
                       purpose="call back")
        assert any(p["mobile"] in t for t in _store_texts(store)) or not city["cases"]
    assert p["resident_id"] in (home / "sim" / "reports.ndjson").read_text("utf-8")
    assert pl.read_parquet(tmp_path / "internal.parquet")["reporter_name"].str.starts_with("欧").any()
    r = CliRunner().invoke(_cli(), ["erase", "--home", str(home), "--person", p["resident_id"], "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    where = " ".join(x["where"] for x in rep["places"])
    assert "reports.ndjson" in where and "research.csv" in where and "internal.parquet" in where
    if city["cases"]:
        assert "case_reporters" in where
    ids = [p["mobile"], p["resident_id"], p["email"], p["name"], p["address"]]
    with open_store(home) as store:
        texts = _store_texts(store)
        for v in ids:
            assert not [t for t in texts if v in t], v
        from cityvitals.share import audit

        assert audit.verify(store)["ok"]
        assert audit.entries(store, limit=1)[0]["action"] == "erase"
    raw = (home / "cityvitals.duckdb").read_bytes()  # the file was compacted: no freed block keeps them
    assert [v for v in ids if v.encode() in raw] == []
    files = [f for f in home.rglob("*") if f.is_file() and f.suffix != ".duckdb"] + [tmp_path / "research.csv"]
    for f in files:
        text = (_pq_text(f) if f.suffix == ".parquet" else f.read_bytes().decode("utf-8", "ignore"))
        for v in ids:
            assert v not in text, (f, v)
    pq = pl.read_parquet(tmp_path / "internal.parquet")
    assert not pq["reporter_name"].str.starts_with("欧").any()
    # the other reporter is still there
    assert EXTRA[1]["resident_id"] in (home / "sim" / "reports.ndjson").read_text("utf-8")


def test_dp_counts_within_promised_bound_and_budget_refuses(home):
    from cityvitals.errors import InputError
    from cityvitals.share.dp import accuracy, laplace_vector
    from cityvitals.share.export import release_aggregate

    # accuracy: over many draws, |noise| exceeds the 95% bound at most ~5% of the time
    eps = 0.5
    true = list(range(40)) * 50
    bound95 = accuracy(eps, 1, 0.05)
    errs = np.abs(np.asarray(laplace_vector(true, eps)) - np.asarray(true))
    frac = float((errs > bound95).mean())
    assert frac <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / len(true)), frac
    assert errs.mean() < 2 * (1 / eps)  # mean |noise| of Laplace(b) is b
    # budget: reports_by_unit has 5.0 at 0.5 per release -> 10 releases, the 11th is refused
    with open_store(home) as store:
        for i in range(10):
            rel = release_aggregate(store, "reports_by_unit", actor="t")
            assert rel["budget"]["spent"] == pytest.approx(0.5 * (i + 1))
        spent_before = store.share.budget("reports_by_unit")["spent"]
        with pytest.raises(InputError, match="exceed its privacy budget"):
            release_aggregate(store, "reports_by_unit", actor="t")
        assert store.share.budget("reports_by_unit")["spent"] == spent_before
        rows = rel["frame"]
        assert rows.height > 0 and (rows["count"] >= 0).all()


def test_catalog_datasets_cli(home):
    r = CliRunner().invoke(_cli(), ["datasets", "--home", str(home), "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.output)
    tiers = {d["id"]: d["tier"] for d in doc["datasets"]}
    assert tiers["units"] == "base" and tiers["alerts"] == "thematic" and tiers["reports"] == "special"
    rep = next(d for d in doc["datasets"] if d["id"] == "reports")
    assert {f["class"] for f in rep["fields"]} == {"public", "restricted", "personal"}
    assert rep["licence"] and rep["lineage"] and rep["frequency"] and rep["available"]
    r = CliRunner().invoke(_cli(), ["datasets", "--home", str(home), "--fields"])
    assert r.exit_code == 0 and "reporter" in r.output and "pseudonym" in r.output
