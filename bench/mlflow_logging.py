"""raysweep's batch writer against MLflow's own asynchronous logging (log_batch(synchronous=False))
and plain synchronous log_batch, on the sqlite store: the time the sweep's driver thread spends per
report (what slows a sweep) and the time until everything is in MLflow. Ratios in one run.

    .venv/bin/python bench/mlflow_logging.py [--trials 100] [--reports 100]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def reports(trials: int, n: int):
    for step in range(1, n + 1):
        for t in range(trials):
            yield t, step, {"train_loss": 1 / step + t, "val_loss": 1.1 / step, "val_accuracy": 1 - 1 / step,
                            "best_val_accuracy": 1 - 1 / step, "lr": 1e-3, "epoch_seconds": 0.05,
                            "grad_norm": 0.5, "time_this_iter_s": 0.05}


def run(kind: str, trials: int, n: int) -> dict:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from raysweep.tracking.writer import BatchWriter

    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.create_experiment("bench")
        runs = [client.create_run(exp).info.run_id for _ in range(trials)]
        writer = BatchWriter(client) if kind == "writer" else None
        ops, on_thread = [], 0.0
        start = time.perf_counter()
        for t, step, values in reports(trials, n):
            t0 = time.perf_counter()
            if writer:
                writer.metrics(runs[t], values, step)
            else:
                now = int(time.time() * 1000)
                metrics = [Metric(k, v, now, step) for k, v in values.items()]
                op = client.log_batch(runs[t], metrics=metrics, synchronous=kind == "sync")
                if kind == "async":
                    ops.append(op)
            on_thread += time.perf_counter() - t0
        if writer:
            assert writer.close(timeout_s=600)
        for op in ops:
            op.wait()
        total = time.perf_counter() - start
        written = sum(len(client.get_metric_history(r, "val_loss")) for r in runs[:5])
        assert written == 5 * n, written
    return {"driver_ms_per_report": 1000 * on_thread / (trials * n), "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--reports", type=int, default=100)
    args = parser.parse_args()
    out = {kind: run(kind, args.trials, args.reports) for kind in ("writer", "async", "sync")}
    for kind, r in out.items():
        print(f"{kind:7s} driver {r['driver_ms_per_report']:7.3f} ms/report   all written after {r['total_s']:7.1f} s")
    w, a = out["writer"], out["async"]
    print(f"async/writer: driver time {a['driver_ms_per_report'] / w['driver_ms_per_report']:.1f}x, "
          f"time to written {a['total_s'] / w['total_s']:.2f}x")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mlflow_logging.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
