import json

import numpy as np
import pytest

from helpers import metrics, results
from helpers.results import RunRecord
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def make_record(variant="baseline", mode="full", epochs=3, **kw):
    history = {k: [0.5 + i for i in range(epochs)] for k in results.HISTORY_KEYS}
    fields = dict(variant=variant, mode=mode, data="synthetic", learning_rate=1e-3, epochs=epochs,
                  best_epoch=2, valid_accuracy=0.5, test_accuracy=0.49, valid_loss=1.4, test_loss=1.5,
                  seconds_per_epoch=1.0, first_epoch_seconds=3.0, wall_time_to_best=4.0,
                  stopped="early_stopping", history=history, config={"seed": 42})
    fields.update(kw)
    return RunRecord(**fields)


def test_round_trip_keeps_every_field(tmp_path):
    record = make_record()
    path = results.save_run(record, tmp_path)
    assert path == tmp_path / "baseline.json"
    assert results.load_run("baseline", directory=tmp_path) == record


def test_top_level_keys_readable_without_helpers(tmp_path):
    raw = json.loads(results.save_run(make_record(), tmp_path).read_text())
    for key in ("variant", "mode", "data", "learning_rate", "epochs", "best_epoch", "valid_accuracy",
                "test_accuracy", "seconds_per_epoch", "wall_time_to_best", "history", "config"):
        assert key in raw
    assert set(raw["history"]) == set(results.HISTORY_KEYS)


def test_quick_records_go_to_their_own_folder():
    assert results.record_path("x", "quick").parent.name == "quick"
    assert results.record_path("x", "full").parent.name == "results"


def test_crash_while_writing_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = results.save_run(make_record(valid_accuracy=0.5), tmp_path)
    before = path.read_text()

    def dies_halfway(obj, f, **kw):
        f.write('{"variant": "baseline", "valid_acc')
        raise KeyboardInterrupt("process killed")

    monkeypatch.setattr(results.json, "dump", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        results.save_run(make_record(valid_accuracy=0.9), tmp_path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]  # no temp file left


def test_invalid_records_are_refused():
    with pytest.raises(ValueError, match="mode"):
        make_record(mode="fast")
    with pytest.raises(ValueError, match="3 entries"):
        make_record(history={k: [1.0] for k in results.HISTORY_KEYS})


def test_missing_record_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="first run notebook 03, which trains 'bn'"):
        results.load_run("bn", directory=tmp_path)
    with pytest.raises(FileNotFoundError, match="first run the notebook or script that trains it"):
        results.load_run("mine", directory=tmp_path)


def test_frames():
    records = [make_record("baseline"), make_record("bn", epochs=2)]
    assert results.summary_table(records).data["variant"].tolist() == ["baseline", "bn"]
    html = results.summary_table(records).to_html()
    assert "1.00e-03" in html and "49.00%" in html and "0.490000" not in html and "4 s" in html


def test_time_to_reach_a_validation_loss():
    h = {"loss": [2.0, 1.5, 1.2, 1.1], "accuracy": [0.1] * 4, "val_loss": [1.9, 1.6, 1.4, 1.45],
         "val_accuracy": [0.1] * 4, "epoch_seconds": [3.0, 1.0, 1.0, 1.0]}
    r = make_record(epochs=4, history=h)
    assert metrics.time_to_reach(r, 1.6) == (2, 4.0)  # reached exactly at epoch 2: compile epoch counted
    assert metrics.time_to_reach(r, 1.5) == (3, 5.0)
    assert metrics.time_to_reach(r, 1.0) == (None, None)  # never
    with pytest.raises(ValueError, match="finite"):
        metrics.time_to_reach(r, float("nan"))


def test_test_predictions_travel_with_the_record_and_older_records_load_without_them(tmp_path):
    import json

    from helpers import training
    from helpers.models import build_dnn
    from tests.synthetic import blobs

    data = blobs(n_train=64, n_valid=16, n_test=16)
    model = training.compile_model(build_dnn(n_hidden=1, n_neurons=8, input_shape=(20,), seed=0), 1e-2)
    record = training.train(model, data, "p", max_epochs=1, patience=1, verbose=0, resume=False)
    predicted = record.test_predicted()
    assert len(predicted) == 16 and (predicted == model.predict(data.x_test, verbose=0).argmax(1)).all()
    assert np.mean(predicted == data.y_test) == pytest.approx(record.test_accuracy)
    path = results.save_run(record, directory=tmp_path)
    older = {k: v for k, v in json.loads(path.read_text()).items() if k != "test_predictions"}
    path.write_text(json.dumps(older))
    assert results.load_run("p", directory=tmp_path).test_predictions == ""


def test_load_seeds_reads_the_records_of_the_modes_seeds(tmp_path):
    from helpers import config

    assert results.seed_names("selu", config.FULL.seeds) == [
        ("selu", 42), ("selu_seed1", 1), ("selu_seed2", 2), ("selu_seed3", 3), ("selu_seed4", 4)]
    names = [name for name, _ in results.seed_names("selu")]  # this mode's seeds (the tests: quick, two)
    assert names == ["selu", "selu_seed1"]
    for name in names:
        results.save_run(make_record(name), tmp_path)
    assert [r.variant for r in results.load_seeds("selu", directory=tmp_path)] == names
    with pytest.raises(FileNotFoundError, match="selu_seed2"):  # full mode's five, whatever this mode is
        results.load_seeds("selu", mode="full", directory=tmp_path)
    with pytest.raises(FileNotFoundError, match="bn"):
        results.load_seeds("bn", directory=tmp_path)


def test_compare_gives_each_difference_an_interval_across_seeds():
    groups = {"baseline": [make_record("baseline", valid_accuracy=a) for a in (0.50, 0.51, 0.505)],
              "bn": [make_record("bn_seed", valid_accuracy=a, best_epoch=4) for a in (0.54, 0.545, 0.55)],
              "selu": [make_record("selu", valid_accuracy=a) for a in (0.49, 0.51, 0.50)]}
    table = metrics.compare(groups, reference="baseline", seconds_per_epoch={"baseline": 2.0, "bn": 2.5, "selu": 2.1})
    assert list(table.index) == ["a-b: baseline", "c: batch norm", "d: SELU"]
    assert table.loc["c: batch norm", "valid acc (mean ± SD)"] == "54.50% ± 0.50"
    diff, interval = table.loc["c: batch norm", "vs baseline"].split(" ", 1)
    assert diff == "+4.00" and interval.startswith("[+") and float(table.loc["c: batch norm", "p"]) < 0.01
    low, high = (float(v) for v in interval.strip("[]").split(", "))
    assert 0 < low < 4 < high  # batch norm's interval holds its difference, not 0
    low, high = (float(v) for v in table.loc["d: SELU", "vs baseline"].split(" ", 1)[1].strip("[]").split(", "))
    assert low < 0 < high and float(table.loc["d: SELU", "p"]) > 0.4
    assert float(table.loc["d: SELU", "detectable"]) > 0.5  # three noisy seeds cannot see half a point
    assert table.loc["a-b: baseline", "vs baseline"] == ""
    assert table.loc["c: batch norm", "s/epoch"] == "2.50 s" and table.loc["c: batch norm", "s to best"] == "10 s"


def test_markdown_table_has_the_index_as_first_column_and_escapes_pipes():
    import pandas as pd

    from helpers.results import markdown_table

    frame = pd.DataFrame({"acc": ["0.5", "0.6"], "note": ["a|b", "c"]}, index=pd.Index(["x", "y"], name="model"))
    assert markdown_table(frame).splitlines() == ["| model | acc | note |", "| --- | ---: | ---: |",
                                                  "| x | 0.5 | a\\|b |", "| y | 0.6 | c |"]


def test_summary_line_states_mean_and_range():
    def rec(name, acc):
        h = {k: [0.0] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")}
        return RunRecord(name, "quick", "x", 1e-3, 1, 1, acc, acc, 1.0, 1.0, 1.0, 1.0, 1.0, "max_epochs", h, {})

    records = (rec("a", 0.50), rec("b", 0.52), rec("c", 0.51))
    assert metrics.summary_line(records) == ("validation accuracy over 3 runs: mean 51.00%, range 50.00% "
                                             "to 52.00% (2.00 points)")


def test_series_table_gives_mean_and_sd_over_seeds_and_adds_mc_dropout_after_alpha_dropout():
    config = {"seed": 42, "architecture": {"parameters": 1000}}
    series = {"baseline": [make_record("baseline", valid_accuracy=a, test_accuracy=a - 0.01, config=config)
                           for a in (0.50, 0.51, 0.52)],
              "alpha_dropout": [make_record("alpha_dropout", valid_accuracy=0.49, best_epoch=4, config=config)] * 2,
              "bn": [make_record("bn", valid_accuracy=0.54, config=config)]}
    table = metrics.series_table(series, seconds_per_epoch={"baseline": 2.0, "alpha_dropout": 2.5, "bn": 3.0})
    assert table.loc["a-b: baseline", "valid_mean"] == pytest.approx(0.51)
    assert table.loc["a-b: baseline", "valid_std"] == pytest.approx(0.01)  # over seeds: ddof 1, not 0.0082
    assert table.loc["c: batch norm", "valid_std"] == 0.0  # one seed: no spread measured
    mc = {"per_seed": [{"record": r, "set": s, "MC": acc} for r, acc in (("a", 0.50), ("b", 0.52))
                       for s in ("valid", "test")]}
    table = metrics.add_mc_dropout(table, mc)
    assert list(table.index) == ["a-b: baseline", "e: alpha dropout", "e: + MC dropout", "c: batch norm"]
    assert table.loc["e: + MC dropout", "test_mean"] == pytest.approx(0.51)
    assert table.loc["e: + MC dropout", "seconds_per_epoch"] == 2.5  # the same training as alpha dropout's
    shown = metrics.series_display(table)
    assert shown.loc["a-b: baseline", "valid acc (mean ± SD)"] == "51.00% ± 1.00"
    assert shown.loc["a-b: baseline", "test acc (mean ± SD)"] == "50.00% ± 1.00"
    assert shown.loc["e: + MC dropout", "valid acc (mean ± SD)"] == "51.00% ± 1.41"
