"""Recognition of personal data (misses and false alarms, Chinese and English), transforms, keys, k-anonymity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from cityvitals.share.kanon import check_k, k_anonymise
from cityvitals.share.keys import KeyRing
from cityvitals.share.pii import find_pii, gb11643_check, luhn_ok, redact_texts, valid_resident_id
from cityvitals.share.transform import mask_expr
from cityvitals.sim.pii import person, plate

RNG_SEED = 20240715


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError


@pytest.fixture(scope="module")
def people():
    rng = np.random.default_rng(RNG_SEED)
    return [person(rng, "310104") for _ in range(300)], [plate(rng) for _ in range(100)]


def test_valid_ids_flagged_random_wrong_check_digits_not(people):
    rng = np.random.default_rng(1)
    ppl, _ = people
    for p in ppl:
        hits = find_pii(f"身份证{p['resident_id']}，谢谢", ["resident_id"])
        assert [h.value for h in hits] == [p["resident_id"]]
    wrong = 0
    for _ in range(2000):
        s17 = "".join(map(str, rng.integers(0, 10, 17)))
        good = gb11643_check(s17)
        bad = next(c for c in "0123456789X" if c != good and c != rng.choice(list("0123456789X")))
        s = s17 + bad
        assert not valid_resident_id(s)
        assert find_pii(f"订单号 {s} 已发货 / order {s} shipped") == [], s
        wrong += 1
    assert wrong == 2000
    # valid ones built from random digits with a real birth date are flagged
    for _ in range(200):
        first = f"{int(rng.integers(110000, 660000))}{1950 + int(rng.integers(0, 60))}0{int(rng.integers(1, 10))}1{int(rng.integers(0, 9))}{int(rng.integers(100, 999))}"
        rid = first + gb11643_check(first)
        assert [h.kind for h in find_pii(f"ID {rid}.")] == ["resident_id"]


def test_luhn_cards():
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.choice([16, 19]))
        card = _luhn_complete("62" + "".join(map(str, rng.integers(0, 10, n - 3))))
        assert [h.kind for h in find_pii(f"卡号{card}。")] == ["bank_card"]
        broken = card[:-1] + str((int(card[-1]) + 1) % 10)
        assert find_pii(f"卡号{broken}。") == []
    assert [h.kind for h in find_pii("card 6222 0212 3456 7890 128 please")] == ["bank_card"]


def test_every_kind_found_in_chinese_and_english_text(people):
    ppl, plates = people
    for i, p in enumerate(ppl[:100]):
        pl_ = plates[i % len(plates)]
        zh = (f"我是{p['name']}，电话{p['mobile']}，身份证{p['resident_id']}，座机021-6438{i:04d}，"
              f"邮箱user{i}@mail.sh.cn，车牌{pl_}，住在南京西路{100 + i}号{i + 1}室，位置31.2304{i:02d}, 121.4737{i:02d}。")
        kinds = [h.kind for h in find_pii(zh)]
        assert kinds == ["name", "mobile", "resident_id", "landline", "email", "plate", "address", "coordinates"], (zh, kinds)
        out = redact_texts([zh])[0]
        for v in (p["name"], p["mobile"], p["resident_id"], pl_, f"user{i}@mail.sh.cn"):
            assert v not in out
        en = (f"I am {p['name']}, call me on +86 {p['mobile']} or (021) 6438{i:04d}; mail j.doe{i}@example.com. "
              f"Car {pl_} at {10 + i} Fenghe Road.")
        kinds = [h.kind for h in find_pii(en)]
        assert kinds == ["name", "mobile", "landline", "email", "plate", "address"], (en, kinds)


def test_no_false_alarms_on_clean_text():
    rng = np.random.default_rng(3)
    clean = [
        "枫和居委会路灯坏了，晚上很黑。", "Rubbish not collected for days at Fenghe.", "PM2.5 浓度 75 微克/立方米，AQI 105。",
        "水压 0.28 MPa，流量 1234 m3/h。", "The meeting is at 23:10 on 2024-07-15.", "温度 31.5 度，湿度 80%。",
        "Sensor WQ-000123 reported 7.25 pH.", "工单编号 20240715001 已受理。", "Call 12345 for city services.",
        "价格 1999 元，数量 3 件。", "In 2024 the district had 1,234,567 residents.",
    ]
    for _ in range(300):
        n = int(rng.integers(1, 10))
        clean.append(f"读数 {rng.uniform(0, 1000):.2f}，序号 {int(rng.integers(0, 10**n))}，时间 {int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}。")
        clean.append(f"Value {rng.uniform(-50, 50):.3f} at step {int(rng.integers(0, 10**6))}.")
    for t in clean:
        assert find_pii(t) == [], (t, find_pii(t))
    assert redact_texts(clean) == clean


def test_redact_batch_keeps_alignment_and_nulls():
    texts = ["电话13812345678", None, "", "nothing here", "mail a@b.cn"]
    assert redact_texts(texts) == ["电话[电话]", None, "", "nothing here", "mail [邮箱]"]


def test_mask_and_pseudonym(tmp_path):
    df = pl.DataFrame({"m": ["13812345678"], "id": ["11010519491231002X"], "n": ["欧阳娜娜"], "p": ["沪A·12345"],
                       "e": ["li.lei@example.cn"]})
    out = df.select(mask_expr("m", "phone"), mask_expr("id", "resident_id"), mask_expr("n", "name"),
                    mask_expr("p", "plate"), mask_expr("e", "email")).row(0)
    assert out == ("138****5678", "110105********002X", "欧***", "沪A***5", "l***@example.cn")
    ring = KeyRing(tmp_path)
    a = ring.pseudonym("11010519491231002X")
    assert ring.pseudonym("11010519491231002x") == a  # normalised
    assert KeyRing(tmp_path).pseudonym("11010519491231002X") == a  # the key persists in the data directory
    assert (tmp_path / "share" / "pseudonym_keys.json").stat().st_mode & 0o077 == 0
    ring.rotate()
    assert ring.pseudonym("11010519491231002X") != a
    assert a in ring.all_pseudonyms("11010519491231002X")


def test_k_anonymity_generalises_and_suppresses():
    rng = np.random.default_rng(4)
    t0 = datetime(2024, 7, 15, tzinfo=timezone.utc)
    n = 400
    comm = [f"c{i}" for i in range(20)]
    df = pl.DataFrame({
        "unit": [comm[int(i)] for i in rng.integers(0, 20, n)],
        "t": [t0 + timedelta(minutes=int(m)) for m in rng.integers(0, 24 * 60, n)],
        "cat": [str(c) for c in rng.choice(["a", "b", "c"], n)],
    })
    levels = {"community": {c: c for c in comm}, "street": {c: f"s{int(c[1:]) // 5}" for c in comm},
              "district": {c: "d0" for c in comm}}
    for k in (2, 3, 5, 10):
        res = k_anonymise(df, {"unit": "unit", "t": "time", "cat": "category"}, k=k, unit_levels=levels)
        assert check_k(res.frame, ["unit", "t", "cat"], k)
        assert res.frame.height + res.suppressed == n
        assert res.suppressed <= 0.05 * n or res.rung == {"time": "1mo", "unit": "district", "category": False}
