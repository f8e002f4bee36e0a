"""Turn blocks of true values into the messages a real city sends, and stream them to disk.

What real feeds do to data, done here on purpose and counted:

- each sensor reports at its own phase within the interval, with jitter;
- readings go missing (random loss, dropouts, sensors offline — decided by the caller);
- some arrive late (held back and released one to three blocks later) so files are not
  in time order; within a block rows are in step order, not timestamp order;
- exact duplicates and conflicting duplicates (same sensor and ts, another value);
- bad records at ``bad_rate``, each of a kind the ingest stage must catch: malformed
  JSON, a missing field, a bad timestamp, a non-numeric value, a non-finite value, an
  unknown sensor, a unit the kind does not accept, a value outside the physical range.

Bad records that name a real sensor carry a timestamp half an interval away from its
readings, so each one has exactly one reason to be refused. Parquet cannot hold
malformed JSON, so in Parquet mode those records go to a small NDJSON file beside each
part. Output streams block by block: memory is bounded by the block size whatever the
run length.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cityvitals.registry import load_kinds
from cityvitals.sim._rng import stream
from cityvitals.sim.model import DECIMALS

# share of bad records by reason (rows of the Parquet table where representable)
BAD_SHARES = {
    "malformed": 0.14, "missing_field": 0.10, "bad_timestamp": 0.12, "bad_value": 0.12, "not_finite": 0.04,
    "unknown_sensor": 0.14, "wrong_unit": 0.10, "out_of_range": 0.12, "conflict": 0.12,
}
TEXT_ONLY = {"malformed", "missing_field", "bad_timestamp", "bad_value"}
LATE_RATE = 0.002
DUP_RATE = 0.0005


class Emitter:
    def __init__(self, out: Path, sensors, *, start_epoch: float, dt: float, fmt: str, bad_rate: float, seed: int,
                 utc_offset_h: float, steps_per_file: int):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.dt = dt
        self.start_ms = int(round(start_epoch * 1000))
        self.dt_ms = int(round(dt * 1000))
        self.bad_rate = float(bad_rate)
        self.seed = seed
        self.offset_ms = int(utc_offset_h * 3600 * 1000)
        self.tz = f"{'+' if utc_offset_h >= 0 else '-'}{int(abs(utc_offset_h)):02d}:{int(round(abs(utc_offset_h) % 1 * 60)):02d}"
        self.steps_per_file = steps_per_file
        kinds = load_kinds()
        n = len(sensors.ids)
        self.n = n
        self.kind = sensors.kind
        rng = stream(seed, "emit", "static")
        self.phase_ms = rng.integers(0, max(1, self.dt_ms), n).astype(np.int64)
        # unit conversion canonical -> the sensor's own unit, and rounding in that unit
        self.factor = np.ones(n)
        self.offset = np.zeros(n)
        self.round_scale = np.ones(n)
        for k in np.unique(sensors.kind):
            idx = np.flatnonzero(sensors.kind == k)
            kd = kinds[k]
            for u in np.unique(sensors.unit[idx]):
                sel = idx[sensors.unit[idx] == u]
                f, o = kd.conversion(u) or (1.0, 0.0)
                self.factor[sel], self.offset[sel] = f, o
                dec = max(0, DECIMALS.get(k, 3) + int(round(math.log10(f))) if f > 0 else 0)
                self.round_scale[sel] = 10.0**dec
        self.lo = np.array([kinds[k].min for k in sensors.kind])
        self.hi = np.array([kinds[k].max for k in sensors.kind])
        self.unit_values = sorted(set(sensors.unit.tolist()))
        self.bad_units = ["furlong", "kg", "lux", "V"]
        self.unit_dict = pa.array(self.unit_values + [u for u in self.bad_units if u not in self.unit_values])
        self.unit_code = np.searchsorted(np.array(self.unit_values, dtype=object), sensors.unit).astype(np.int32)
        self.bad_unit_code = {u: self.unit_values.__len__() + i for i, u in enumerate(u for u in self.bad_units if u not in self.unit_values)}
        self.unknown = [f"UNK{i:06d}" for i in range(1, 1001)]
        self.id_dict = pa.array(list(sensors.ids) + self.unknown)
        self.id_series = pl.Series("sensor_id", list(sensors.ids) + self.unknown)
        self.units_series = pl.Series("unit", self.unit_values + list(self.bad_unit_code))
        self.carry: list[tuple[int, dict]] = []
        self.counts = {"readings": 0, "late": 0, "duplicates": 0, "bad": {r: 0 for r in BAD_SHARES}}
        self.files: list[str] = []
        self._writer = None
        self._file_no = -1
        self._text = None
        self.block_no = 0

    # ------------------------------------------------------------------ files
    def _open(self, file_no: int) -> None:
        self._close_file()
        self._file_no = file_no
        stem = f"part-{file_no:05d}"
        if self.fmt == "parquet":
            path = self.out / f"{stem}.parquet"
            schema = pa.schema([("sensor_id", pa.dictionary(pa.int32(), pa.string())), ("ts", pa.timestamp("ms", tz="UTC")),
                                ("value", pa.float64()), ("unit", pa.dictionary(pa.int32(), pa.string()))])
            self._writer = pq.ParquetWriter(path, schema, compression="zstd", compression_level=1,
                                            use_dictionary=["sensor_id", "unit"], store_schema=False, write_statistics=["ts"])
            self._text = None
            self._text_path = self.out / f"{stem}-malformed.ndjson"
        else:
            path = self.out / f"{stem}.ndjson"
            self._writer = None
            self._text = path.open("wb")
            self._text_path = path
        self.files.append(path.name)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._text is not None:
            self._text.close()
            self._text = None

    def _text_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        if self.fmt == "parquet":
            path = self._text_path
            if path.name not in self.files:
                self.files.append(path.name)
            with path.open("ab") as fh:
                fh.write(data)
        else:
            self._text.write(data)

    # ------------------------------------------------------------------ the block
    def write_block(self, k0: int, V: np.ndarray, present: np.ndarray) -> None:
        """Emit steps k0..k0+T-1: ``V`` canonical values (T×N), ``present`` which readings exist."""
        rng = stream(self.seed, "emit", "block", k0)
        file_no = k0 // self.steps_per_file
        if file_no != self._file_no:
            self._open(file_no)
        t_idx, s_idx = np.nonzero(present)
        s_idx = s_idx.astype(np.int32)
        n = len(s_idx)
        step = (k0 + t_idx).astype(np.int64)
        lim = self.dt_ms // 3
        jitter = np.clip(np.round(rng.normal(0, 1500, n)), -lim, lim).astype(np.int64)
        ts = self.start_ms + step * self.dt_ms + self.phase_ms[s_idx] + jitter
        val = self._to_unit(V[t_idx, s_idx], s_idx)
        rows = {"s": s_idx, "ts": ts, "v": val, "u": self.unit_code[s_idx]}
        # rows used as the base of duplicates, conflicts and sensor-specific bad records
        n_bad = int(rng.poisson(self.bad_rate * n))
        reasons = rng.multinomial(n_bad, list(BAD_SHARES.values())) if n_bad else np.zeros(len(BAD_SHARES), int)
        bad_n = dict(zip(BAD_SHARES, (int(x) for x in reasons)))
        n_dup = int(rng.poisson(DUP_RATE * n))
        need = n_dup + sum(bad_n[r] for r in BAD_SHARES if r != "unknown_sensor")
        base = rng.choice(n, min(need, n), replace=False) if n else np.zeros(0, np.int64)
        cur = 0

        def take(k: int) -> np.ndarray:
            nonlocal cur
            out = base[cur:cur + k]
            cur += k
            return out

        extra: list[dict] = []
        d = take(n_dup)
        extra.append({k: v[d] for k, v in rows.items()})
        self.counts["duplicates"] += len(d)
        # conflicts: same sensor and ts, another value still in range
        c = take(bad_n["conflict"])
        if len(c):
            s = rows["s"][c]
            sc = self.round_scale[s]
            v = rows["v"][c]
            delta = np.maximum(np.abs(v) * 0.1, 1.0 / sc)
            hi_u = (self.hi[s] - self.offset[s]) / self.factor[s]
            lo_u = (self.lo[s] - self.offset[s]) / self.factor[s]
            newv = np.where(v + delta <= hi_u, v + delta, v - delta)
            newv = np.where(newv < lo_u, np.where(v == hi_u, lo_u, hi_u), newv)
            extra.append({"s": s, "ts": rows["ts"][c], "v": np.round(newv * sc) / sc, "u": rows["u"][c]})
        self.counts["bad"]["conflict"] += len(c)
        half = self.dt_ms // 2
        # out of range, not finite, wrong unit: real sensors, ts between their readings
        o = take(bad_n["out_of_range"])
        if len(o):
            s = rows["s"][o]
            hi_c = self.hi[s] + (self.hi[s] - self.lo[s]) * 0.5 + 1.0
            extra.append({"s": s, "ts": rows["ts"][o] + half, "v": np.round((hi_c - self.offset[s]) / self.factor[s], 3), "u": rows["u"][o]})
        self.counts["bad"]["out_of_range"] += len(o)
        wu = take(bad_n["wrong_unit"])
        if len(wu):
            codes = np.array(list(self.bad_unit_code.values()), dtype=np.int32)
            extra.append({"s": rows["s"][wu], "ts": rows["ts"][wu] + half, "v": rows["v"][wu], "u": codes[rng.integers(0, len(codes), len(wu))]})
        self.counts["bad"]["wrong_unit"] += len(wu)
        nf = take(bad_n["not_finite"])
        text_lines: list[str] = []
        if self.fmt == "parquet":
            if len(nf):
                extra.append({"s": rows["s"][nf], "ts": rows["ts"][nf] + half, "v": np.full(len(nf), np.nan), "u": rows["u"][nf]})
        else:  # JSON has no NaN: send the value as a string DuckDB reads as infinity
            for r in nf:
                text_lines.append(self._json(int(rows["s"][r]), int(rows["ts"][r]) + half, '"inf"', int(rows["u"][r])))
        self.counts["bad"]["not_finite"] += len(nf)
        nu = bad_n["unknown_sensor"]
        if nu and n:
            b = rng.integers(0, n, nu)
            unk = (self.n + rng.integers(0, len(self.unknown), nu)).astype(np.int32)
            extra.append({"s": unk, "ts": rows["ts"][b], "v": rows["v"][b], "u": rows["u"][b]})
        self.counts["bad"]["unknown_sensor"] += nu
        # text-only bad records
        for r in take(bad_n["malformed"]):
            line = self._json(int(rows["s"][r]), int(rows["ts"][r]) + half, self._num(rows["v"][r]), int(rows["u"][r]))
            cut = int(rng.integers(5, max(6, len(line) - 3)))
            text_lines.append(line[:cut] if rng.uniform() < 0.7 else line.replace('":', '" ', 1))
        self.counts["bad"]["malformed"] += bad_n["malformed"]
        for r in take(bad_n["missing_field"]):
            s, t = int(rows["s"][r]), int(rows["ts"][r]) + half
            text_lines.append(f'{{"sensor_id":"{self.id_series[s]}","ts":"{self._iso(t)}"}}' if rng.uniform() < 0.6
                              else f'{{"sensor_id":"{self.id_series[s]}","value":{self._num(rows["v"][r])}}}')
        self.counts["bad"]["missing_field"] += bad_n["missing_field"]
        for r in take(bad_n["bad_timestamp"]):
            bad_ts = str(rng.choice(["2024-13-45T25:61:00+08:00", "yesterday", "15/07/2024 08:00", "2024-07-15T08:00:00"]))
            text_lines.append(f'{{"sensor_id":"{self.id_series[int(rows["s"][r])]}","ts":"{bad_ts}","value":{self._num(rows["v"][r])}}}')
        self.counts["bad"]["bad_timestamp"] += bad_n["bad_timestamp"]
        for r in take(bad_n["bad_value"]):
            bv = str(rng.choice(["n/a", "ERR", "--", "12,5"]))
            text_lines.append(self._json(int(rows["s"][r]), int(rows["ts"][r]) + half, f'"{bv}"', int(rows["u"][r])))
        self.counts["bad"]["bad_value"] += bad_n["bad_value"]
        # late arrivals: hold some rows back for 1-3 blocks
        late = rng.uniform(size=n) < LATE_RATE
        if late.any():
            delay = rng.integers(1, 4, int(late.sum()))
            held = {k: v[late] for k, v in rows.items()}
            for dd in np.unique(delay):
                m = delay == dd
                self.carry.append((self.block_no + int(dd), {k: v[m] for k, v in held.items()}))
            rows = {k: v[~late] for k, v in rows.items()}
            self.counts["late"] += int(late.sum())
        due = [c for b, c in self.carry if b <= self.block_no]
        self.carry = [(b, c) for b, c in self.carry if b > self.block_no]
        extra.extend(due)
        self.counts["readings"] += n
        self._write_rows(rows, extra, rng)
        self._text_lines(text_lines)
        self.block_no += 1

    def flush(self) -> None:
        """Release every held-back row (end of run) and close the files."""
        if self.carry:
            if self._file_no < 0:
                self._open(0)
            rest = [c for _, c in sorted(self.carry, key=lambda x: x[0])]
            self.carry = []
            empty = {"s": np.zeros(0, np.int32), "ts": np.zeros(0, np.int64), "v": np.zeros(0), "u": np.zeros(0, np.int32)}
            self._write_rows(empty, rest, stream(self.seed, "emit", "flush"))
        self._close_file()

    # ------------------------------------------------------------------ helpers
    def _to_unit(self, v: np.ndarray, s: np.ndarray) -> np.ndarray:
        sc = self.round_scale[s]
        out = (v - self.offset[s]) / self.factor[s]
        return np.round(out * sc) / sc

    def _iso(self, ts_ms: int) -> str:
        loc = np.datetime64(ts_ms + self.offset_ms, "ms")
        return str(loc) + self.tz

    @staticmethod
    def _num(v: float) -> str:
        return repr(float(v))

    def _json(self, s: int, ts_ms: int, value_text: str, u: int) -> str:
        return (f'{{"sensor_id":"{self.id_series[s]}","ts":"{self._iso(ts_ms)}","value":{value_text},'
                f'"unit":"{self.units_series[u]}"}}')

    def _write_rows(self, rows: dict, extra: list[dict], rng: np.random.Generator) -> None:
        extra = [e for e in extra if len(e["s"])]
        if extra:
            ex = {k: np.concatenate([e[k] for e in extra]) for k in rows}
            n0, n1 = len(rows["s"]), len(ex["s"])
            pos = np.sort(rng.integers(0, n0 + 1, n1))
            order = np.insert(np.arange(n0), pos, n0 + np.arange(n1))
            rows = {k: np.concatenate([rows[k], ex[k]])[order] for k in rows}
        if not len(rows["s"]):
            return
        if self.fmt == "parquet":
            table = pa.table({
                "sensor_id": pa.DictionaryArray.from_arrays(pa.array(rows["s"].astype(np.int32)), self.id_dict),
                "ts": pa.array(rows["ts"], type=pa.timestamp("ms", tz="UTC")),
                "value": pa.array(rows["v"], type=pa.float64()),
                "unit": pa.DictionaryArray.from_arrays(pa.array(rows["u"].astype(np.int32)), self.unit_dict),
            })
            self._writer.write_table(table, row_group_size=1_000_000)
        else:
            df = pl.DataFrame({
                "sensor_id": self.id_series.gather(rows["s"]),
                "ts": pl.Series(rows["ts"] + self.offset_ms).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%S%.3f") + self.tz,
                "value": rows["v"],
                "unit": self.units_series.gather(rows["u"]),
            })
            df.write_ndjson(self._text)
