"""A task's metrics over a whole split: equal to scikit-learn's on the same predictions, however the
split is batched, and a regression task trains on them."""
import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error, r2_score, roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from raysweep.train import Run, Splits, Task, evaluate, train
from raysweep.train.device import precision_for


class Synthetic(Task):
    """1300 samples (the evaluator's CPU batches are 64: the split spans 21) with a known target."""

    def __init__(self, quality, metrics=(), outputs=1):
        self.quality, self.metrics, self.outputs = quality, metrics, outputs
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(1300, 5, generator=g)
        w = torch.randn(5, generator=g)
        signal = self.x @ w
        self.y = signal + 0.5 * torch.randn(1300, generator=g) if quality in ("r2", "mse") else \
            (signal > 0).long() if outputs <= 2 else torch.bucketize(signal, torch.tensor([-1.0, 1.0]))

    def datasets(self, config):
        d = TensorDataset(self.x, self.y)
        return Splits(d, d, d)

    def model(self, config):
        torch.manual_seed(1)
        return nn.Linear(5, self.outputs)


def _predictions(task):
    model = task.model({})
    with torch.no_grad():
        return model, model(task.x)


def test_regression_metrics_equal_sklearn_over_the_whole_split():
    task = Synthetic("r2", metrics=("mse", "mae", "rmse"))
    model, out = _predictions(task)
    got = evaluate(model, task, task.datasets({}).val, "cpu", precision_for("fp32", "cpu"))
    y, p = task.y.numpy(), out.squeeze(-1).numpy()
    assert got["r2"] == pytest.approx(r2_score(y, p), rel=1e-6)
    assert got["mse"] == pytest.approx(mean_squared_error(y, p), rel=1e-6)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-6)
    assert got["rmse"] == pytest.approx(mean_squared_error(y, p) ** 0.5, rel=1e-6)
    assert got["loss"] == pytest.approx(mean_squared_error(y, p), rel=1e-6)  # the default loss of a regression task
    # a mean of per-batch R² is not the split's R²: the hook must not be that
    batches = [r2_score(y[i:i + 512], p[i:i + 512]) for i in range(0, 1300, 512)]
    assert abs(sum(batches) / len(batches) - got["r2"]) > 1e-4


@pytest.mark.parametrize("outputs", [1, 2, 3])
def test_auc_and_f1_equal_sklearn_over_the_whole_split(outputs):
    task = Synthetic("auc", metrics=("f1",), outputs=outputs)
    model, out = _predictions(task)
    got = evaluate(model, task, task.datasets({}).val, "cpu", precision_for("fp32", "cpu"))
    y = task.y.numpy()
    if outputs == 1:
        scores, labels, kw = torch.sigmoid(out[:, 0]).numpy(), (out[:, 0] > 0).long().numpy(), {}
    elif outputs == 2:
        scores, labels, kw = torch.softmax(out, -1)[:, 1].numpy(), out.argmax(-1).numpy(), {}
    else:
        scores, labels, kw = torch.softmax(out, -1).numpy(), out.argmax(-1).numpy(), {"multi_class": "ovr"}
    assert got["auc"] == pytest.approx(roc_auc_score(y, scores, **kw), rel=1e-6)
    assert got["f1"] == pytest.approx(f1_score(y, labels, average="binary" if outputs <= 2 else "macro"), rel=1e-6)


def test_a_metric_of_your_own_through_the_hook():
    class Own(Synthetic):
        def split_metrics(self, output, target):
            return {**super().split_metrics(output, target), "median_error": float((output[:, 0] - target).abs().median())}

    task = Own("r2", metrics=("median_error",))
    model, out = _predictions(task)
    got = evaluate(model, task, task.datasets({}).val, "cpu", precision_for("fp32", "cpu"))
    assert got["median_error"] == pytest.approx(float((out[:, 0] - task.y).abs().median()))
    assert set(got) == {"loss", "r2", "median_error"}


def test_a_regression_task_learns_and_reports_r2_each_epoch_and_on_test(monkeypatch):
    import raysweep.train.loop as loop

    task = Synthetic("r2", metrics=("mse",))
    monkeypatch.setattr(loop, "get_task", lambda ref, dirs: task)
    reports = []
    result = train({"lr": 3e-2, "batch_size": 64}, Run(task="synthetic", metric="val_r2", mode="max", epochs=4,
                                                       evaluate_test=True), lambda m, d: reports.append(m))
    assert result.status == "completed"
    assert [r["best_val_r2"] for r in reports] == [max(r["val_r2"] for r in reports[:i + 1]) for i in range(4)]
    assert reports[-1]["val_r2"] > 0.5 > reports[0]["val_r2"] - 1  # it learns the linear signal
    assert {"test_r2", "test_mse", "test_loss"} <= reports[-1].keys() and "val_accuracy" not in reports[-1]
