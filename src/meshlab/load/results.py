"""What a load run measured, shaped after fortio's `RunnerResults` JSON.

Both engines (fortio itself, or the built-in one) produce a `LoadResult`; its
`to_fortio()` writes fortio's field names and units (durations in seconds,
`ActualDuration` in nanoseconds, `RetCodes` keyed by the status code as a string,
-1 for a request that got no HTTP response), and `from_fortio()` reads them back, so a
tool that reads fortio's JSON reads ours.

Three additions fortio does not have: `SampleHeaders` (the headers of the first response
seen for each status code: a check wants to know whether the 503s carried
`x-envoy-overloaded`), `ErrorKinds` (why requests got no response: "TimeoutError") and
`HeaderCounts` (responses by the value of one header, like `x-served-by`: which version
answered how often).
Percentiles of the built-in engine are exact (from every sample); fortio interpolates
within its histogram buckets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
NO_RESPONSE = -1  # fortio's RetCodes key for a request that failed below HTTP

# Bucket upper bounds in milliseconds, finer where HTTP latencies usually are.
_BUCKETS_MS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80,
               90, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 2000, 3000, 4000, 5000, 7500,
               10000, 20000, 30000, 60000)


@dataclass(frozen=True)
class Bucket:
    start: float      # seconds
    end: float
    percent: float    # cumulative share of samples up to END, 0-100
    count: int


@dataclass(frozen=True)
class Histogram:
    """Durations in seconds: count, extremes, mean, buckets and percentiles."""

    count: int = 0
    min: float = 0.0
    max: float = 0.0
    sum: float = 0.0
    avg: float = 0.0
    std_dev: float = 0.0
    buckets: tuple[Bucket, ...] = ()
    percentiles: dict[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: list[float], percentiles: tuple[float, ...] = PERCENTILES) -> "Histogram":
        if not samples:
            return cls()
        ordered = sorted(samples)
        count, total = len(ordered), math.fsum(ordered)
        mean = total / count
        variance = math.fsum((s - mean) ** 2 for s in ordered) / count
        return cls(count=count, min=ordered[0], max=ordered[-1], sum=total, avg=mean, std_dev=math.sqrt(variance),
                   buckets=_bucketize(ordered), percentiles={p: _percentile(ordered, p) for p in percentiles})

    def percentile(self, p: float) -> float:
        return self.percentiles[float(p)]

    def to_fortio(self) -> dict:
        data = {"Count": self.count, "Min": self.min, "Max": self.max, "Sum": self.sum, "Avg": self.avg,
                "StdDev": self.std_dev,
                "Data": [{"Start": b.start, "End": b.end, "Percent": b.percent, "Count": b.count}
                         for b in self.buckets] or None}
        if self.percentiles:
            data["Percentiles"] = [{"Percentile": _number(p), "Value": v} for p, v in self.percentiles.items()]
        return data

    @classmethod
    def from_fortio(cls, data: dict | None) -> "Histogram":
        data = data or {}
        return cls(
            count=int(data.get("Count", 0)), min=float(data.get("Min", 0)), max=float(data.get("Max", 0)),
            sum=float(data.get("Sum", 0)), avg=float(data.get("Avg", 0)), std_dev=float(data.get("StdDev", 0)),
            buckets=tuple(Bucket(float(b["Start"]), float(b["End"]), float(b["Percent"]), int(b["Count"]))
                          for b in data.get("Data") or ()),
            percentiles={float(p["Percentile"]): float(p["Value"]) for p in data.get("Percentiles") or ()},
        )


@dataclass(frozen=True)
class LoadResult:
    url: str
    engine: str                          # "builtin" or "fortio"
    ret_codes: dict[int, int]            # status code (-1: no response) -> requests
    durations: Histogram                 # every request
    error_durations: Histogram           # requests without a 2xx answer
    actual_qps: float
    actual_duration: float               # seconds
    requested_qps: float                 # 0: as fast as possible
    requested: str                       # "exactly 100 calls" or "5s"
    num_threads: int                     # concurrent connections (fortio's "threads")
    sample_headers: dict[int, dict[str, str]] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    header_counts: dict[str, int] = field(default_factory=dict)   # "" counts responses without it
    start_time: str = ""
    version: str = ""

    @property
    def total(self) -> int:
        return sum(self.ret_codes.values())

    def count(self, code: int) -> int:
        return self.ret_codes.get(code, 0)

    @property
    def ok(self) -> int:
        """Requests answered with a 2xx status."""
        return sum(n for code, n in self.ret_codes.items() if 200 <= code < 300)

    def header(self, code: int, name: str) -> str | None:
        """Header NAME of the sampled response with status CODE, if any."""
        return self.sample_headers.get(code, {}).get(name.lower())

    def codes_text(self) -> str:
        """`200 x 2, 503 x 48` (no response shows as `no response`)."""
        parts = [f"{'no response' if c == NO_RESPONSE else c} x {n}" for c, n in sorted(self.ret_codes.items())]
        return ", ".join(parts) or "no requests"

    def to_fortio(self) -> dict:
        return {
            "RunType": "HTTP",
            "Labels": "",
            "StartTime": self.start_time,
            "RequestedQPS": "max" if not self.requested_qps else _number(self.requested_qps),
            "RequestedDuration": self.requested,
            "ActualQPS": self.actual_qps,
            "ActualDuration": int(round(self.actual_duration * 1e9)),
            "NumThreads": self.num_threads,
            "Version": self.version,
            "URL": self.url,
            "DurationHistogram": self.durations.to_fortio(),
            "ErrorsDurationHistogram": self.error_durations.to_fortio(),
            "RetCodes": {str(code): n for code, n in sorted(self.ret_codes.items())},
            "SampleHeaders": {str(code): h for code, h in sorted(self.sample_headers.items())},
            "ErrorKinds": dict(self.error_kinds),
            "HeaderCounts": dict(self.header_counts),
            "Engine": self.engine,
        }

    @classmethod
    def from_fortio(cls, data: dict, *, engine: str = "fortio") -> "LoadResult":
        requested_qps = str(data.get("RequestedQPS", "0"))
        return cls(
            url=str(data.get("URL", "")),
            engine=str(data.get("Engine", engine)),
            ret_codes={int(code): int(n) for code, n in (data.get("RetCodes") or {}).items()},
            durations=Histogram.from_fortio(data.get("DurationHistogram")),
            error_durations=Histogram.from_fortio(data.get("ErrorsDurationHistogram")),
            actual_qps=float(data.get("ActualQPS", 0)),
            actual_duration=float(data.get("ActualDuration", 0)) / 1e9,
            requested_qps=0.0 if requested_qps in ("max", "0", "") else float(requested_qps),
            requested=str(data.get("RequestedDuration", "")),
            num_threads=int(data.get("NumThreads", 0)),
            sample_headers={int(c): {k.lower(): v for k, v in h.items()}
                            for c, h in (data.get("SampleHeaders") or {}).items()},
            error_kinds={str(k): int(v) for k, v in (data.get("ErrorKinds") or {}).items()},
            header_counts={str(k): int(v) for k, v in (data.get("HeaderCounts") or {}).items()},
            start_time=str(data.get("StartTime", "")),
            version=str(data.get("Version", "")),
        )


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _percentile(ordered: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _bucketize(ordered: list[float]) -> tuple[Bucket, ...]:
    buckets, index, start, seen = [], 0, ordered[0], 0
    bounds = [b / 1000.0 for b in _BUCKETS_MS if b / 1000.0 > ordered[0]] + [math.inf]
    for bound in bounds:
        count = 0
        while index < len(ordered) and ordered[index] < bound:
            index += 1
            count += 1
        if count:
            seen += count
            end = min(bound, ordered[-1]) if bound != math.inf else ordered[-1]
            buckets.append(Bucket(start, end, round(100.0 * seen / len(ordered), 3), count))
        start = bound
        if index == len(ordered):
            break
    return tuple(buckets)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
