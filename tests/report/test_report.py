"""`raysweep report` on real sweeps read back from MLflow (sqlite and a real server): importance finds
the one parameter that matters, each failure rule fires on the run crafted for it and not on a healthy
one, the HTML opens in a real headless Chromium, and the stock MLflow UI opens the experiment on its runs."""
import os
import subprocess
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from raysweep.report import analyse, build
from raysweep.session import Session
from raysweep.spec import load_spec
from raysweep.sweep.local_cluster import free_port
from raysweep.tracking.read import load_sweep
from raysweep.tracking.runs import runs_page
from tests.support import ROOT, run_cli
from tests.tracking.test_server import Server

CRAFTED = '''
import math
import ray.train


def one_knob(config):
    """val_loss depends on lr alone; width and kind are decoys."""
    score = (math.log10(config["lr"]) + 2) ** 2
    for epoch in range(1, 4):
        ray.train.report({"val_loss": score + 1.0 / epoch, "train_loss": 2.0 / epoch})


NAN = float("nan")
CURVES = {  # (train_loss, val_loss) by epoch, each the textbook picture of one failure
    "healthy": ([2.0, 1.2, 0.8, 0.6, 0.5, 0.45], [2.1, 1.3, 0.9, 0.7, 0.6, 0.55]),
    "diverged": ([2.0, 1.5, 3.0, 9.0, 40.0, NAN], [2.1, 1.6, 3.1, 9.5, 42.0, NAN]),
    "too_slow": ([2.0, 1.98, 1.96, 1.95, 1.94, 1.93], [2.1, 2.08, 2.06, 2.05, 2.04, 2.03]),
    "overfitting": ([2.0, 1.0, 0.6, 0.4, 0.3, 0.2], [2.0, 1.2, 1.0, 1.1, 1.3, 1.5]),
    "noisy": ([2.0, 1.5, 1.7, 1.2, 1.4, 1.0], [2.0, 1.6, 1.6, 1.4, 1.4, 1.2]),
}


def crafted(config):
    for train, val in zip(*CURVES[config["mode"]]):
        ray.train.report({"train_loss": train, "val_loss": val})
'''

HEAD = "metric: {name: val_loss, mode: min}\nresources: {cpus_per_worker: 0.25}\n"
ONE_KNOB = HEAD + """name: one_knob
task: crafted:one_knob
search: {method: random, num_samples: 16, seed: 0, max_concurrent: 4}
stopping: {max_epochs: 3}
parameters:
  lr: {distribution: loguniform, min: 1e-4, max: 1.0}
  width: {distribution: uniform, min: 0.0, max: 1.0}
  kind: {values: [a, b, c]}
"""
FAILURES = HEAD + """name: failures
task: crafted:crafted
search: {method: grid}
stopping: {max_epochs: 6}
parameters:
  mode: {values: [healthy, diverged, too_slow, overfitting, noisy]}
"""


def sweep(tmp_path, text, tracking_uri=None):
    (tmp_path / "crafted.py").write_text(CRAFTED)
    (tmp_path / "spec.yaml").write_text(text)
    spec = load_spec(str(tmp_path / "spec.yaml"))
    session = Session.start(spec, runs_dir=str(tmp_path / "runs"), tracking_uri=tracking_uri)
    result = session.stage(spec, "sweep", quiet=True)
    run_id = session.tracker.index.stage_run("sweep", result.path, None)[0]
    return session, result, run_id


def chromium():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (`make test` installs Debian's chromium where it can)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def open_page(p, url, ready, shot):
    """`url` in headless Chromium until the selector `ready` shows; its console errors; a screenshot."""
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector(ready, timeout=60_000)
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
        return errors, page.content()
    finally:
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real `mlflow server` on 127.0.0.1 (its store an sqlite file) for both sweeps."""
    server = Server(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.kill()


def test_importance_finds_the_one_parameter_that_matters_and_the_page_opens_without_errors(ray_session, tmp_path):
    session, result, run_id = sweep(tmp_path, ONE_KNOB)  # the sqlite store (the next test reads a server's)
    assert len(result.trials) == 16
    uri = session.tracker.uri
    out = run_cli("report", run_id, "--tracking-uri", uri, "--out", tmp_path / "html", timeout=120)
    assert out.returncode == 0, out.stderr
    page = tmp_path / "html" / "report.html"
    assert out.stdout.strip().splitlines()[-1] == f"report: {page}"
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.html", "report/metric_vs_params.png", "report/learning_curves.png"} <= logged
    assert client.get_run(run_id).data.tags["raysweep.report"] == "report/report.html"

    ranked = {i.param: (i.mean, i.std) for i in analyse(load_sweep(client, run_id)).importance}
    assert list(ranked)[0] == "lr" and set(ranked) == {"lr", "width", "kind"}, ranked
    lr, rest = ranked.pop("lr"), max(m + s for m, s in ranked.values())
    assert lr[0] > 0.5 and lr[0] - lr[1] > rest, (lr, ranked)  # ahead of the decoys beyond its uncertainty
    shown = page.read_text()
    assert all(f"<td>{name}</td>" in shown for name in ("lr", "width", "kind"))  # the table the user reads
    with chromium() as p:
        errors, content = open_page(p, f"file://{page}", ".plotly .parcoords", tmp_path / "report.png")
    assert errors == []
    assert "Parameter importance" in content and "What to try next" in content and 'alt="params"' in content


def test_each_failure_rule_fires_on_its_crafted_run_from_a_real_server_and_its_ui_opens_on_the_runs(ray_session, server,
                                                                                                   tmp_path):
    session, result, run_id = sweep(tmp_path, FAILURES, tracking_uri=server.uri)
    client = MlflowClient(server.uri)
    files, analysis = build(client, run_id, str(tmp_path / "report"), fmt="md")  # read through the server
    assert {a.path for a in client.list_artifacts(run_id, "report")} == {f"report/{os.path.basename(f)}" for f in files}
    mode = {t.trial_id: t.config["mode"] for t in result.trials}
    assert {mode[t]: rule for t, rule in analysis.diagnoses.items()} == {
        "diverged": "diverged", "too_slow": "too_slow", "overfitting": "overfitting", "noisy": "noisy"}  # not healthy
    text = open(files[0]).read()
    assert "| overfitting | 1 |" in text and "regularise more" in text
    children = client.search_runs([analysis.sweep.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert len(children) == 5 and all(r.data.metrics for r in children)  # each trial once, none empty

    port = free_port()  # the UI of `make mlflow-ui` over the server's store
    ui = subprocess.Popen(["make", "-s", "-o", "install", "mlflow-ui", f"MLFLOW_DB={server.root}/server.db",
                           f"MLFLOW_PORT={port}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        deadline = time.monotonic() + 240  # an MLflow server's start took over 90 s on a loaded 2-core machine
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and ui.poll() is None, "make mlflow-ui did not come up"
                time.sleep(0.5)
        # MLflow 3.17 picks its GenAI or model-training view from the URL, else from the browser's last
        # choice (GenAI at first), whatever the experiment: raysweep's link asks for the runs
        url = runs_page(f"http://127.0.0.1:{port}", analysis.sweep.experiment_id)
        with chromium() as p:
            _, content = open_page(p, url, "a:has-text('sweep')", tmp_path / "mlflow_ui.png")
        assert "matching runs" in content and "No traces" not in content
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)


def test_a_fine_trial_that_went_on_from_a_coarse_checkpoint_is_read_as_one_run_with_it():
    from raysweep.report.analysis import convergence, diagnose
    from raysweep.tracking.read import StageView, TrialView, _whole_runs

    nan = float("nan")
    coarse = TrialView("coarse", "c", None, {}, "completed", 0.5, 2, 0, {"train_loss": [2.0, 1.0]})
    # epochs 3-6 alone fall by 5 %: "too slow" read from its first epoch here, healthy from the run's
    fine = [TrialView("fine", "f0", None, {}, "completed", 0.9, 6, 0, {"train_loss": [nan, nan, 0.40, 0.39, 0.385, 0.38]},
                      started_from="c", started_at=2)]
    assert diagnose(fine[0]) == "too_slow"
    fine += [TrialView("fine", f"f{i}", None, {}, "completed", 0.5 + i / 10, 6, i) for i in (1, 2, 3)]
    _whole_runs([StageView("coarse", "r1", "val_accuracy", "max", [coarse]),
                 StageView("fine", "r2", "val_accuracy", "max", fine)])
    assert fine[0].curves["train_loss"] == [2.0, 1.0, 0.40, 0.39, 0.385, 0.38] and diagnose(fine[0]) is None
    # the stage's epochs spent count only what it trained
    assert convergence("fine", fine, "max", None).epochs_spent == [4, 10, 16, 22]
