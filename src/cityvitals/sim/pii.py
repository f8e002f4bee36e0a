"""Synthetic personal data for reports: names, mobile numbers, resident IDs, plates.

All of it is generated so that desensitisation can be tested on realistic shapes; none
of it belongs to anyone. Resident ID numbers follow GB 11643-1999: six-digit area
code, birth date, three-digit sequence (odd for men) and an ISO 7064 MOD 11-2 check
character.

>>> gb11643_check("11010519491231002")
'X'
>>> valid_resident_id("11010519491231002X")
True
>>> valid_resident_id("110105194912310021")
False
"""

from __future__ import annotations

import numpy as np

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢傅钟姜崔谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅鹏辉建国文斌宇浩晨欣怡佳琪子涵雨轩梓博宁瑶婷雪晓东海燕飞凯")
_MOBILE_PREFIX = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155", "157",
                  "158", "159", "166", "176", "177", "180", "181", "186", "187", "188", "189", "198", "199")
_PLATE_LETTERS = "ABCDEFGHJKLMN"
_PLATE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def gb11643_check(first17: str) -> str:
    """The check character of a resident ID from its first 17 digits."""
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS)) % 11]


def valid_resident_id(rid: str) -> bool:
    return len(rid) == 18 and rid[:17].isdigit() and rid[17] == gb11643_check(rid[:17])


def person(rng: np.random.Generator, area_code: str, year_now: int = 2024) -> dict[str, str]:
    """A synthetic resident: name, gender, mobile, resident ID (valid check digit)."""
    name = SURNAMES[int(rng.integers(len(SURNAMES)))] + "".join(
        GIVEN[int(i)] for i in rng.integers(0, len(GIVEN), int(rng.integers(1, 3))))
    male = bool(rng.uniform() < 0.5)
    year = int(rng.integers(year_now - 80, year_now - 18))
    birth = np.datetime64(f"{year}-01-01") + np.timedelta64(int(rng.integers(0, 365)), "D")
    seq = int(rng.integers(0, 500)) * 2 + (1 if male else 0)
    first17 = f"{area_code[:6]:0<6}{str(birth).replace('-', '')}{seq:03d}"
    mobile = _MOBILE_PREFIX[int(rng.integers(len(_MOBILE_PREFIX)))] + f"{int(rng.integers(0, 10**8)):08d}"
    return {"name": name, "gender": "M" if male else "F", "mobile": mobile, "resident_id": first17 + gb11643_check(first17)}


def plate(rng: np.random.Generator) -> str:
    """A Shanghai-style plate such as 沪A·3K7Q9 (5 characters after the letter)."""
    tail = "".join(_PLATE_CHARS[int(i)] for i in rng.integers(0, len(_PLATE_CHARS), 5))
    return f"沪{_PLATE_LETTERS[int(rng.integers(len(_PLATE_LETTERS)))]}·{tail}"
