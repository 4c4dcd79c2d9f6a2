"""The example flow: the tutorial's shape (read data, add features, train, evaluate) with stdlib only.

Deploy it from this directory on a 5-minute schedule and run it once now:

    python ../../scripts/deploy.py duration_model.py:train_duration_model --run-now

Typed parameters (Prefect checks them before a run starts, and deploy.py before it deploys),
tasks with retries, and a persisted result: with the profile's PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK
the returned summary lands in the stack's bucket under results/.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task

from trips import fit_line, rmse, synthetic_trips


@task(retries=2, retry_delay_seconds=2)
def read_trips(run_date: date, n_rows: int) -> list[dict[str, float]]:
    # The tutorial reads parquet files here; retries cover a flaky source.
    return synthetic_trips(run_date, n_rows)


@task
def add_features(trips: list[dict[str, float]], rush_hours: frozenset[int]) -> list[dict[str, float]]:
    """Rush-hour trips are scaled down so one straight line fits all trips."""
    return [
        {**trip, "adjusted_min": trip["duration_min"] / (1.3 if trip["hour"] in rush_hours else 1.0)} for trip in trips
    ]


@task(retries=2, retry_delay_seconds=2)
def train(rows: list[dict[str, float]]) -> tuple[float, float]:
    return fit_line([r["distance_km"] for r in rows], [r["adjusted_min"] for r in rows])


@task
def evaluate(model: tuple[float, float], rows: list[dict[str, float]]) -> float:
    intercept, slope = model
    return rmse([intercept + slope * r["distance_km"] for r in rows], [r["adjusted_min"] for r in rows])


@flow(persist_result=True, log_prints=True)
def train_duration_model(run_date: date | None = None, n_rows: int = 500) -> dict[str, float | str]:
    """Trains a trip-duration model on one day of trips (default: today) and returns its metrics."""
    day = run_date or date.today()
    if n_rows < 2:
        raise ValueError(f"n_rows must be at least 2 to fit a line, got {n_rows}")
    rows = add_features(read_trips(day, n_rows), frozenset({8, 9, 17, 18}))
    model = train(rows)
    error = evaluate(model, rows)
    get_run_logger().info("day %s: %d trips, rmse %.2f min", day, n_rows, error)
    return {"run_date": day.isoformat(), "n_rows": n_rows, "intercept": model[0], "slope": model[1], "rmse_min": error}


if __name__ == "__main__":
    print(train_duration_model(n_rows=50))
