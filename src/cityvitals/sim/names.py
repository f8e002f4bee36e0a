"""Generated place names (Chinese with a pinyin English form) for districts, streets and communities.

Names are drawn from small syllable tables so they read like Shanghai place names
without being real ones.

>>> rng = __import__("numpy").random.default_rng(1)
>>> zh, en = place_name(rng, "区", "District")
>>> zh.endswith("区") and en.endswith("District")
True
"""

from __future__ import annotations

import numpy as np

SYLLABLES: dict[str, str] = {
    "东": "dong", "西": "xi", "南": "nan", "北": "bei", "新": "xin", "长": "chang", "江": "jiang",
    "华": "hua", "光": "guang", "明": "ming", "海": "hai", "浦": "pu", "虹": "hong", "静": "jing",
    "徐": "xu", "宁": "ning", "安": "an", "兴": "xing", "和": "he", "平": "ping", "金": "jin",
    "桥": "qiao", "林": "lin", "泉": "quan", "云": "yun", "枫": "feng", "梅": "mei", "松": "song",
    "嘉": "jia", "定": "ding", "宝": "bao", "山": "shan", "青": "qing", "湾": "wan", "塘": "tang",
    "泾": "jing", "港": "gang", "河": "he", "园": "yuan", "春": "chun", "瑞": "rui", "祥": "xiang",
    "丰": "feng", "龙": "long", "凤": "feng", "石": "shi", "门": "men", "汇": "hui", "川": "chuan",
}
_CHARS = list(SYLLABLES)


def place_name(rng: np.random.Generator, suffix_zh: str, suffix_en: str, used: set[str] | None = None) -> tuple[str, str]:
    """A two-syllable name with its suffix, unique within ``used`` when given."""
    for _ in range(200):
        a, b = rng.choice(len(_CHARS), 2, replace=False)
        stem = _CHARS[a] + _CHARS[b]
        if used is None or stem not in used:
            break
    if used is not None:
        used.add(stem)
    en = (SYLLABLES[stem[0]] + SYLLABLES[stem[1]]).capitalize()
    return stem + suffix_zh, f"{en} {suffix_en}"
