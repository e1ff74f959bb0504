"""dgmlab.reporting: thresholds reached, best epochs and results rows from training histories."""

import json

import pytest

from dgmlab.plotting import markdown_table
from dgmlab.reporting import (THESIS_TABLE_4_1, best, first_below, format_duration, plural, results_rows,
                              run_summary, thresholds_reached)


def history(errors, eval_every=1, dt=10.0):
    out = []
    for i, e in enumerate(errors, start=1):
        r = {"epoch": i, "train_loss": 1.0 / i, "time_s": dt * i}
        if i % eval_every == 0:
            r["test_error"] = e
        out.append(r)
    return out


def metrics(errors, **extra):
    return {"model": "adgm", "command": "python -m dgmlab train adgm --data mnist --labels 100", "seed": 0,
            "device": "cpu", "machine": "cpu: test", "wall_clock_s": 123.0, "history": history(errors), **extra}


def test_first_below_is_strict_and_reports_time():
    h = history([9.0, 5.0, 4.9, 2.5, 1.5])
    c = first_below(h, 5.0)
    assert (c.epoch, c.time_s, c.value) == (3, 30.0, 4.9)  # 5.0 itself is not below 5 %
    assert c.reached and c.describe() == "epoch 3 (30 s)"
    assert first_below(h, 1.0).describe() == "not reached in 5 epochs"
    assert first_below(history([9.0]), 1.0).describe() == "not reached in 1 epoch"
    assert plural(1, "epoch") == "1 epoch" and plural(0, "label") == "0 labels"


def test_thresholds_skip_epochs_without_evaluation():
    h = history([8.0, 4.0, 3.5, 1.0], eval_every=2)  # only epochs 2 and 4 are evaluated
    got = thresholds_reached(h, (5, 3, 2))
    assert got[5.0].epoch == 2 and got[3.0].epoch == 4 and got[2.0].epoch == 4


def test_best_min_and_max():
    h = history([6.0, 3.0, 4.0])
    assert best(h) == (2, 3.0, 20.0)
    assert best(h, mode="max") == (1, 6.0, 10.0)
    with pytest.raises(ValueError, match="mode"):
        best(h, mode="median")


def test_missing_key_and_bad_history_raise_clear_errors():
    with pytest.raises(KeyError, match="test_error"):
        first_below([{"epoch": 1, "train_loss": 1.0}], 5)
    with pytest.raises(ValueError, match="epoch"):
        first_below([{"test_error": 1.0}], 5)
    with pytest.raises(TypeError, match="list"):
        first_below({"epoch": 1}, 5)
    with pytest.raises(KeyError, match="metrics.json"):
        run_summary({"history": []})


def test_non_finite_values_are_ignored():
    h = history([float("nan"), 4.0])
    assert first_below(h, 5).epoch == 2


def test_format_duration():
    assert format_duration(45) == "45 s"
    assert format_duration(600) == "10.0 min"
    assert format_duration(3 * 3600) == "3.0 h"
    assert format_duration(None) == "–"
    with pytest.raises(ValueError):
        format_duration(-1)


def test_run_summary_and_rows_from_metrics_json(tmp_path):
    m = metrics([10.0, 4.0, 2.5, 2.8])
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(m))
    s = run_summary(json.loads(path.read_text()))
    assert s["epochs"] == 4 and s["final"] == 2.8 and (s["best"], s["best_epoch"]) == (2.5, 3)
    assert s["train_time_s"] == 40.0 and s["crossings"][2.0].reached is False
    assert [x["command"] for x in s["sessions"]] == [m["command"]]  # a run that was never resumed: one session
    resumed = {**m, "sessions": [{"command": "a", "epochs_done": 2}, {"command": "a --resume", "epochs_done": 4}]}
    assert [x["epochs_done"] for x in run_summary(resumed)["sessions"]] == [2, 4]
    rows = results_rows({"ADGM": m}, reference={k: v["MNIST 100"] for k, v in THESIS_TABLE_4_1.items()})
    assert rows[0]["thesis (%)"] == "0.96 (±0.02)"
    assert rows[0]["< 5 %"] == "epoch 2 (20 s)" and rows[0]["< 2 %"] == "not reached in 4 epochs"
    table = markdown_table(rows)
    assert "ADGM" in table and "2.80" in table


def test_thesis_table_has_the_mnist_column_for_every_row():
    assert set(THESIS_TABLE_4_1) >= {"M2", "M1+M2", "ADGM", "SDGM"}
    assert all("MNIST 100" in v for v in THESIS_TABLE_4_1.values())


def test_seed_summary_mean_and_sample_std():
    from dgmlab.reporting import seed_summary

    runs = [{"seed": s, "history": [{}] * 10, "final": {"test_error": e}, "train_time_s": 60.0}
            for s, e in zip((1, 2, 3), (3.0, 4.0, 5.0))]
    out = seed_summary(runs)
    assert out["mean"] == pytest.approx(4.0) and out["std"] == pytest.approx(1.0)
    assert out["seeds"] == [1, 2, 3] and out["min"] == 3.0 and out["max"] == 5.0 and out["epochs"] == 10
    assert seed_summary(runs[:1])["std"] == 0.0
    with pytest.raises(ValueError, match="different lengths"):
        seed_summary(runs + [{"seed": 4, "history": [{}] * 3, "final": {"test_error": 1.0}, "train_time_s": 1.0}])
    with pytest.raises(ValueError, match="at least one"):
        seed_summary([])


def test_verdict_rules():
    from dgmlab.reporting import thesis_number, verdict

    assert thesis_number("0.96 (±0.02)") == (0.96, 0.02) and thesis_number("2.12") == (2.12, 0.0)
    with pytest.raises(ValueError):
        thesis_number("–")
    assert verdict(1.2, 0.96, 0.02) == "reproduced"  # within half a point
    assert verdict(12.0, 11.97, 1.71) == "reproduced"
    assert verdict(15.0, 11.97, 1.71) == "reproduced"  # within twice the spread (3.42)
    assert verdict(8.0, 0.96, 0.02, claim_holds=True) == "partly"
    assert verdict(8.0, 0.96, 0.02, claim_holds=False) == "not yet"
    assert verdict(8.0, 0.96, 0.02) == "not yet"
