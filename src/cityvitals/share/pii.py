"""Recognise personal data in free text and declared fields: compiled regexes plus validators.

Why not Presidio or spaCy: both need model downloads (impossible on closed government
networks) and measured 13x slower than a regex pass here. The kinds recognised are the
ones Chinese city data actually carries: mainland resident ID numbers (GB 11643, check
character verified so random digit runs are *not* flagged), mobile and landline numbers,
e-mail addresses, vehicle plates, bank card numbers (Luhn verified), names after a cue
("我是…", "I am …"; names in declared name fields are handled by the field transform),
precise street addresses and decimal coordinates.

The hot path is batch redaction: the texts of a batch are joined with a NUL separator
(which no pattern can cross) and scanned by ONE combined regex in C; Python only runs
for the few matches, to validate and replace them. That is what makes 100k records/s
per core reachable.

>>> [m.kind for m in find_pii("我是王小明，电话13812345678，身份证11010519491231002X。")]
['name', 'mobile', 'resident_id']
>>> find_pii("order 110105194912310021 shipped")  # wrong check digit: not an ID
[]
>>> redact_texts(["call 021-64381234 or mail li.lei@example.cn"])
['call [电话] or mail [邮箱]']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

KINDS = ("resident_id", "bank_card", "mobile", "landline", "email", "plate", "name", "address", "coordinates")
"""Every kind of personal data the recogniser reports, in the order they are tried."""

LABELS: dict[str, str] = {
    "resident_id": "[身份证号]", "bank_card": "[银行卡号]", "mobile": "[电话]", "landline": "[电话]",
    "email": "[邮箱]", "plate": "[车牌]", "name": "[姓名]", "address": "[地址]", "coordinates": "[坐标]",
}
"""What each kind is replaced with in redacted text (one neutral token per kind)."""


def gb11643_check(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of a resident ID's first 17 digits."""
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS)) % 11]


def valid_resident_id(s: str) -> bool:
    """18 characters, a plausible birth date and the right check character (X in either case).

    >>> valid_resident_id("11010519491231002X"), valid_resident_id("110105194912310021")
    (True, False)
    """
    if len(s) != 18 or not s[:17].isdigit():
        return False
    y, m, d = int(s[6:10]), int(s[10:12]), int(s[12:14])
    if not (1900 <= y <= 2099 and 1 <= m <= 12 and 1 <= d <= _DAYS[m]):
        return False
    return s[17].upper() == gb11643_check(s[:17])


def luhn_ok(digits: str) -> bool:
    """The Luhn check used by bank cards (UnionPay included).

    >>> luhn_ok("6222021234567890128"), luhn_ok("6222021234567890127")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
_ND = r"(?<![0-9A-Za-z.])"    # not glued to a longer run of digits/letters, nor a decimal fraction
_NDR = r"(?![0-9A-Za-z]|\.[0-9])"  # ... nor followed by more of them
_CJK_NAME = r"[\u4e00-\u9fff]{2,4}?"

_ADDR_TAIL = r"(?:路|街|大道|弄|巷|公路)\d{1,5}(?:弄\d{1,4})?号(?:\d{1,3}(?:号楼|幢|栋))?(?:\d{1,5}室)?"
_PATTERNS: dict[str, str] = {
    "resident_id": _ND + r"\d{17}[0-9Xx]" + _NDR,
    "bank_card": _ND + r"(?:\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{4}(?:[ -]\d{3})?|\d{16}|\d{19})" + _NDR,
    "mobile": r"(?<![0-9.])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?![0-9]|\.[0-9])",
    "landline": r"(?<![0-9.])(?:\(0\d{2,3}\)|0\d{2,3}-)\s?[2-9]\d{6,7}(?:-\d{1,5})?(?![0-9])",
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "plate": "[" + _PROVINCES + r"][A-HJ-NP-Z][·•\- ]?[A-HJ-NP-Z0-9]{4,5}[A-HJ-NP-Z0-9挂学警港澳]" + _NDR,
    "name": r"(?:我是|我叫|本人|联系人[:：]?|姓名[:：]?|报告人[:：]?)(?P<zh>" + _CJK_NAME + r")(?=[，,。.;；\s电手联身]|$)"
            r"|\b(?:I am|I'm|my name is|this is|name:)\s+(?P<en>[\u4e00-\u9fff]{2,4}|[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2})(?=[,.;\s]|$)",
    # Chinese addresses are found by their tail ("…路123号…") and extended left over the road
    # name afterwards: a pattern starting with a run of Chinese characters would be tried at
    # every character of every text.
    "address": _ADDR_TAIL + r"|\b\d{1,5}\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)?\s(?:Road|Rd|Street|St|Avenue|Ave|Lane|Ln)\b(?:,?\s(?:Apt|Room|Flat)\s?\d+)?",
    "coordinates": r"(?<![0-9.])-?\d{1,3}\.\d{4,}\s*[,，]\s*-?\d{1,3}\.\d{4,}(?![0-9])",
}
_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "resident_id": valid_resident_id,
    "bank_card": lambda s: luhn_ok(re.sub(r"[ -]", "", s)),
}
_PRIORITY = {k: i for i, k in enumerate(KINDS)}

# ---- fast scanners -------------------------------------------------------------------------
# Python's regex engine scans quickly only when a pattern starts with a literal or a plain
# character class; a leading look-behind, alternation or "run of Chinese characters" makes it
# try every position. So: one pass finds digit-bearing runs (a plain class), and the digit
# recognisers (with their look-arounds) run only inside those runs; e-mails are found by their
# "@", Chinese addresses by "路/街…123号" and English ones by "Road/Street…", each extended left
# afterwards.
_DIGIT_KINDS = ("resident_id", "bank_card", "mobile", "landline", "coordinates")
_CANDIDATE = re.compile(r"[0-9+(\-][0-9Xx+()\- .,，]{6,80}")
_DIGITS = re.compile("|".join(f"(?P<{k}>{_PATTERNS[k]})" for k in _DIGIT_KINDS))
_EMAIL_AT = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_EMAIL_LEFT = re.compile(r"[A-Za-z0-9._%+-]{1,64}$")
_PLATE = re.compile(_PATTERNS["plate"])
_NAME_ZH = re.compile(r"(?:我是|我叫|本人|联系人[:：]?|姓名[:：]?|报告人[:：]?)(" + _CJK_NAME + r")(?=[，,。.;；\s电手联身]|$)")
_NAME_EN = re.compile(r"(?:I am|I'm|my name is|this is|name:)\s+([\u4e00-\u9fff]{2,4}|[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2})(?=[,.;\s]|$)")
_ADDR_ZH = re.compile(r"[路街道弄巷]\d{1,5}(?:弄\d{1,4})?号(?:\d{1,3}(?:号楼|幢|栋))?(?:\d{1,5}室)?")
_ADDR_EN = re.compile(r" (?:Road|Rd|Street|St|Avenue|Ave|Lane|Ln)\b(?:,?\s(?:Apt|Room|Flat)\s?\d+)?")
_ADDR_EN_LEFT = re.compile(r"\b\d{1,5}\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)?$")
_CJK_LEFT = re.compile(r"[\u4e00-\u9fff]{1,10}$")


@dataclass(frozen=True)
class Hit:
    """One recognised piece of personal data: its kind, where it is and what it is."""

    kind: str
    start: int
    end: int
    value: str


def _spans(text: str, wanted: set[str] | None = None) -> list[tuple[int, int, str]]:
    """Validated, non-overlapping (start, end, kind) spans of personal data in ``text``.

    A digit run that fails its validator (an 18-digit number with a wrong check
    character) is not personal data and is left alone; the boundary look-arounds keep
    shorter recognisers (mobile) from matching inside it.
    """
    def want(k: str) -> bool:
        return wanted is None or k in wanted

    found: list[tuple[int, int, int, str]] = []
    add = found.append
    n = len(text)
    if wanted is None or wanted & set(_DIGIT_KINDS):
        digits = _DIGITS
        for c in _CANDIDATE.finditer(text):
            for m in digits.finditer(text, c.start(), min(c.end() + 1, n)):
                kind = m.lastgroup
                val = _VALIDATORS.get(kind)
                if not want(kind) or (val is not None and not val(m.group(0))):
                    continue
                s, e = m.span()
                add((s, s - e, _PRIORITY[kind], kind))
    if want("email"):
        for m in _EMAIL_AT.finditer(text):
            left = _EMAIL_LEFT.search(text, max(0, m.start() - 64), m.start())
            if left is not None:
                add((left.start(), left.start() - m.end(), _PRIORITY["email"], "email"))
    if want("plate"):
        for m in _PLATE.finditer(text):
            add((m.start(), m.start() - m.end(), _PRIORITY["plate"], "plate"))
    if want("name"):
        for rx in (_NAME_ZH, _NAME_EN):
            for m in rx.finditer(text):
                s, e = m.span(1)
                add((s, s - e, _PRIORITY["name"], "name"))
    if want("address"):
        for m in _ADDR_ZH.finditer(text):
            left = _CJK_LEFT.search(text, max(0, m.start() - 10), m.start())
            if left is not None:
                add((left.start(), left.start() - m.end(), _PRIORITY["address"], "address"))
        for m in _ADDR_EN.finditer(text):
            left = _ADDR_EN_LEFT.search(text, max(0, m.start() - 40), m.start())
            if left is not None:
                add((left.start(), left.start() - m.end(), _PRIORITY["address"], "address"))
    if not found:
        return []
    found.sort()
    out: list[tuple[int, int, str]] = []
    end = -1
    for s, neg_len, _, kind in found:
        if s >= end:
            out.append((s, s - neg_len, kind))
            end = s - neg_len
    return out


def find_pii(text: str, kinds: Iterable[str] | None = None) -> list[Hit]:
    """Every piece of personal data in ``text`` (validated), in order of appearance."""
    text = text or ""
    return [Hit(k, s, e, text[s:e]) for s, e, k in _spans(text, set(kinds) if kinds is not None else None)]


_SEP = "\x00"


def redact_texts(texts: Sequence[str | None], labels: dict[str, str] | None = None) -> list[str | None]:
    """Replace every recognised piece of personal data in each text with a neutral label.

    The batch is joined with NUL (which no pattern matches or crosses) and scanned once per
    recogniser in C; Python touches only the matches and the final split.
    """
    if not texts:
        return []
    lab = LABELS if labels is None else {**LABELS, **labels}
    nulls = [t is None for t in texts]
    joined = _SEP.join("" if t is None else t.replace(_SEP, " ") for t in texts)
    spans = _spans(joined)
    if spans:
        parts, pos = [], 0
        for s, e, k in spans:
            parts.append(joined[pos:s])
            parts.append(lab[k])
            pos = e
        parts.append(joined[pos:])
        joined = "".join(parts)
    return [None if n else p for p, n in zip(joined.split(_SEP), nulls)]


def contains_pii(texts: Iterable[str | None], kinds: Iterable[str] | None = None) -> list[tuple[int, Hit]]:
    """(index, hit) for every text that holds personal data: what leak scans call."""
    return [(i, h) for i, t in enumerate(texts) if t for h in find_pii(t, kinds)]
