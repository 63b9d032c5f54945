"""Validations per second on one core, for a realistic mix of tracking numbers.

    python benchmarks/validate.py [--count 200000] [--seed 42] [--repeat 3]

Mix (seeded, numbers generated with valid check digits by streams.core.numbers.generate):
70% USPS (mostly IMpb), 15% UPS, 10% FedEx, 5% DHL; 20% printed with spaces/dashes or,
for USPS, behind the 420+ZIP routing prefix; 2% invalid (check digit altered). All numbers
are distinct: nothing is cached per number, so the figure is the real per-call cost.

Prints validate() with the carrier known (the stream processor's hot path, target
>= 300,000/s) and classify() with it unknown (identify across all 18 carriers).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.core.numbers import generate, printed
from streams.core.validation import classify, validate

# (carrier, format, weight): shares within the carrier reflect what labels carry today
MIX: list[tuple[str, str, float]] = [
    ("usps", "usps_impb", 0.63),
    ("usps", "usps_s10", 0.035),
    ("usps", "usps_91", 0.035),
    ("ups", "ups_1z", 0.15),
    ("fedex", "fedex_express_12", 0.06),
    ("fedex", "fedex_ground_15", 0.03),
    ("fedex", "fedex_ground_96", 0.01),
    ("dhl", "dhl_express", 0.05),
]


def build(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    population = [(c, f) for c, f, _ in MIX]
    weights = [w for _, _, w in MIX]
    while len(out) < count:
        code, fmt = rng.choices(population, weights)[0]
        number = generate(code, fmt, rng)
        if number in seen:
            continue
        seen.add(number)
        r = rng.random()
        if r < 0.02:  # invalid: a different last character
            last = number[-1]
            number = number[:-1] + rng.choice([d for d in "0123456789" if d != last])
        elif r < 0.22:
            number = printed(code, number, rng)
        out.append((code, number))
    return out


def rate(fn, items, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(per CPU second, per wall second), best of `repeat` runs.

    The CPU-time figure is the one-core capacity even on a shared, busy machine; the wall
    figure is what this run saw.
    """
    cpu = wall = float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn(items)
        cpu = min(cpu, time.process_time() - c0)
        wall = min(wall, time.perf_counter() - w0)
    return len(items) / cpu, len(items) / wall


def run_known(items: list[tuple[str, str]]) -> None:
    v = validate
    for code, number in items:
        v(number, code)


def run_unknown(items: list[tuple[str, str]]) -> None:
    c = classify
    for _code, number in items:
        c(number)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    items = build(args.count, args.seed)
    invalid = sum(not validate(n, c).valid for c, n in items)
    print(f"{len(items)} distinct numbers, {invalid} invalid ({invalid / len(items):.1%})")
    known, known_wall = rate(run_known, items, args.repeat)
    print(f"validate, carrier known:   {known:>10,.0f} /s per CPU second "
          f"({1e6 / known:.2f} us each; wall clock {known_wall:,.0f} /s)")
    unknown_items = items[: max(len(items) // 10, 1)]
    unknown, unknown_wall = rate(run_unknown, unknown_items, args.repeat)
    print(f"classify, carrier unknown: {unknown:>10,.0f} /s per CPU second "
          f"({1e6 / unknown:.2f} us each; wall clock {unknown_wall:,.0f} /s)")
    target = 300_000
    print(f"target (carrier known) >= {target:,}/s: {'met' if known >= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
