"""Plain-Python helpers of the example flow (a second module, so the upload carries a project, not a file)."""

from __future__ import annotations

import math
import random
from datetime import date


def synthetic_trips(run_date: date, n_rows: int) -> list[dict[str, float]]:
    """Taxi-like trips for one day: distance (km), pickup hour and duration (min), seeded by the date
    so a re-run of the same day sees the same data."""
    rng = random.Random(run_date.toordinal())
    trips = []
    for _ in range(n_rows):
        distance = rng.uniform(0.5, 20.0)
        hour = rng.randrange(24)
        rush = 1.3 if hour in (8, 9, 17, 18) else 1.0
        trips.append(
            {
                "distance_km": distance,
                "hour": hour,
                "duration_min": max(1.0, (3.0 + 2.2 * distance) * rush + rng.gauss(0, 2)),
            }
        )
    return trips


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of y = a + b*x."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x values are equal: cannot fit a slope")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return mean_y - slope * mean_x, slope


def rmse(predicted: list[float], actual: list[float]) -> float:
    return math.sqrt(sum((p - a) ** 2 for p, a in zip(predicted, actual, strict=True)) / len(actual))
