"""``cityvitals bench share``: free-text records desensitised per second per core.

What is measured: :func:`cityvitals.share.pii.redact_texts` (every recogniser, with
check-digit and Luhn validation, batch-joined into one regex pass) over generated
citizen-report texts in Chinese and English shaped like the simulator's (a third carry
a name, mobile and resident ID; plates, landlines, e-mails and card numbers mixed in),
in CPU seconds of one process (= per core; the regex engine is single-threaded).
Baselines in the same run: (1) a plain single-regex pass per text (one digit-run
pattern, no validation), the floor of any regex approach; (2) the naive way, each
recogniser's regex applied to each text in turn. Goal: 100,000 records/s per core.
"""

from __future__ import annotations

import json as _json
import re
import time
from typing import Annotated

import numpy as np
import typer


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Report-like texts with synthetic personal data (valid IDs, Luhn-valid cards)."""
    from cityvitals.sim.pii import person, plate
    from cityvitals.sim.reports import CATEGORIES

    rng = np.random.default_rng(seed)
    templates = [(t, "zh") for v in CATEGORIES.values() for t in v[1]] + [(t, "en") for v in CATEGORIES.values() for t in v[2]]
    people = [person(rng, "310104") for _ in range(512)]
    plates = [plate(rng) for _ in range(256)]
    extras = ["", "", "", " 座机021-6438{:04d}。", " mail li{}@example.cn", " 卡号6222021234567890128", " 另一个号码123456789012345678"]
    out = []
    for i in range(n):
        tpl, lang = templates[int(rng.integers(len(templates)))]
        who = people[i % len(people)]
        contact = ""
        if i % 3 == 0:
            contact = (f"I am {who['name']}, call me on {who['mobile']}." if lang == "en"
                       else f"我是{who['name']}，电话{who['mobile']}，身份证{who['resident_id']}。")
        text = tpl.format(place="枫和居委会" if lang == "zh" else "Fenghe", contact=contact,
                          plate=plates[i % len(plates)], time="23:10")
        ex = extras[i % len(extras)]
        out.append(text + (ex.format(i % 10000) if "{" in ex else ex))
    return out


def run_bench(records: int = 200_000, seed: int = 0, batch: int = 10_000) -> dict:
    from cityvitals.share.pii import _PATTERNS, redact_texts

    texts = make_texts(records, seed)
    # cityvitals: batch redaction
    c0 = time.process_time()
    hits = 0
    for i in range(0, records, batch):
        out = redact_texts(texts[i:i + batch])
        hits += sum(t.count("[") for t in out)
    cv = time.process_time() - c0
    # baseline 1: one plain regex per text
    plain = re.compile(r"\d{11,19}")
    c0 = time.process_time()
    for t in texts:
        plain.sub("*", t)
    b1 = time.process_time() - c0
    # baseline 2: each recogniser in turn, per text (no batching), with validation
    pats = [re.compile(p) for p in _PATTERNS.values()]
    sub_n = min(records, 50_000)
    c0 = time.process_time()
    for t in texts[:sub_n]:
        for p in pats:
            t = p.sub("*", t)
    b2 = (time.process_time() - c0) * records / sub_n
    from cityvitals.bench._machine import machine

    return {
        "records": records, "batch": batch, "labels_written": hits,
        "cityvitals_s": round(cv, 3), "cityvitals_records_per_s": int(records / cv),
        "baseline_single_regex_s": round(b1, 3), "baseline_single_regex_records_per_s": int(records / b1),
        "baseline_per_pattern_records_per_s": int(records / b2),
        "goal_records_per_s": 100_000, "meets_goal": records / cv >= 100_000, "machine": machine(),
    }


def bench_share(
    records: Annotated[int, typer.Option(min=1000, help="Free-text records to desensitise.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Free-text records desensitised per second per core, against single-regex and per-pattern baselines."""
    res = run_bench(records=records, seed=seed)
    if json:
        typer.echo(_json.dumps(res, ensure_ascii=False))
        return
    typer.echo(f"records: {res['records']:,}")
    typer.echo(f"cityvitals redact_texts (all recognisers, validated): {res['cityvitals_records_per_s']:,} records/s per core"
               f" (goal 100,000: {'met' if res['meets_goal'] else 'NOT met'})")
    typer.echo(f"baseline, one plain regex per text:                  {res['baseline_single_regex_records_per_s']:,} records/s")
    typer.echo(f"baseline, each recogniser per text:                  {res['baseline_per_pattern_records_per_s']:,} records/s")
