"""Hostile data files: each is refused before training with a message naming the file,
the column and the lines, and the fix; no MLflow run (not even mlruns/) is created.

Most cases call ``load_dataset`` / ``train.run`` in-process to stay fast; a
representative few drive the real ``gradtrack`` CLI in a subprocess.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, mlflow_runs, run_cli
from gradtrack import train
from gradtrack.errors import DataError
from reliability_support import seed_store

LINEAR = ("+experiment=seed_linear", "backend=numpy")
LOGISTIC = ("+experiment=seed_logistic", "backend=numpy")
# Runs that must succeed skip what these tests do not look at (plots, model, sklearn).
LEAN = (
    "epochs=3",
    "tracking.log_model=false",
    "tracking.log_artifacts=false",
    "checks.baseline=false",
)


def _csv(tmp: Path, text: str | bytes, name: str = "bad.csv") -> Path:
    p = tmp / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _fails(project: Path, monkeypatch, path: Path, *overrides: str) -> str:
    """Run in-process; assert a DataError that names the file and that nothing was tracked."""
    monkeypatch.chdir(project)
    cfg = compose(*(overrides or LINEAR), f"dataset.path={path}")
    with pytest.raises(DataError) as err:
        train.run(cfg)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert not (project / "mlruns").exists()
    assert mlflow_runs(project) == []
    return msg


def _cli_fails(project: Path, path: Path, *overrides: str) -> str:
    out = run_cli([*(overrides or LINEAR), f"dataset.path={path}"], project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert str(path) in out.stderr
    assert not (project / "mlruns").exists()
    return out.stderr


def test_reliability_empty_file_cli(project, tmp_path):
    err = _cli_fails(project, _csv(tmp_path, b""))
    assert "empty (0 bytes)" in err and "gradtrack-data" in err


def test_reliability_header_only(project, tmp_path, monkeypatch):
    msg = _fails(project, monkeypatch, _csv(tmp_path, "mpg,cylinders\n"))
    assert "no data rows" in msg


def test_reliability_missing_feature_column_lists_available_cli(project, tmp_path):
    err = _cli_fails(project, _csv(tmp_path, "mpg,weight\n18,3504\n15,3693\n"))
    assert "dataset.features" in err and "'cylinders'" in err
    assert "available columns: mpg, weight" in err


def test_reliability_missing_target_column(project, tmp_path, monkeypatch):
    msg = _fails(project, monkeypatch, _csv(tmp_path, "cylinders,weight\n8,3504\n4,2000\n"))
    assert "dataset.target" in msg and "'mpg'" in msg and "cylinders, weight" in msg


def test_reliability_non_numeric_value(project, tmp_path, monkeypatch):
    msg = _fails(project, monkeypatch, _csv(tmp_path, "mpg,cylinders\n18,8\n15,abc\n20,4\n"))
    assert "'cylinders'" in msg and "'abc'" in msg and "line 3" in msg


def test_reliability_quoted_decimal_comma(project, tmp_path, monkeypatch):
    msg = _fails(project, monkeypatch, _csv(tmp_path, 'mpg,cylinders\n18,8\n"1,5",4\n'))
    assert "'mpg'" in msg and "'1,5'" in msg and "line 3" in msg and "decimal point" in msg


def test_reliability_unquoted_decimal_comma_splits_fields(project, tmp_path, monkeypatch):
    # Three fields under a two-column header: pandas would silently turn the first
    # into an index; gradtrack refuses and points at the line.
    msg = _fails(project, monkeypatch, _csv(tmp_path, "mpg,cylinders\n18,8\n1,5,4\n"))
    assert "line 3" in msg and "3 fields" in msg and "header has 2" in msg
    assert "decimal point" in msg


def test_reliability_blank_cell_refused_where_not_allowed(project, tmp_path, monkeypatch):
    path = _csv(tmp_path, "No_pregnant,Class\n1,0\n,1\n3,1\nNaN,0\n")
    msg = _fails(project, monkeypatch, path, *LOGISTIC)
    assert "'No_pregnant'" in msg and "lines 3, 5" in msg and "dataset.dropna=true" in msg


def test_reliability_auto_mpg_drops_missing_horsepower_and_logs_count(project, monkeypatch):
    monkeypatch.chdir(project)
    seed_store(project)
    result = train.run(compose(*LINEAR, *LEAN))
    [run] = mlflow_runs(project)
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert run.data.tags["data_rows_dropped"] == "6"
    assert run.data.tags["data_rows"] == "392"


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400"])
def test_reliability_infinite_value(project, tmp_path, monkeypatch, value):
    msg = _fails(project, monkeypatch, _csv(tmp_path, f"mpg,cylinders\n18,8\n15,{value}\n"))
    assert "'cylinders'" in msg and "infinite or out-of-range" in msg and "line 3" in msg
    assert repr(value) in msg


def test_reliability_label_outside_0_1(project, tmp_path, monkeypatch):
    path = _csv(tmp_path, "No_pregnant,Class\n1,0\n2,1\n3,2\n")
    msg = _fails(project, monkeypatch, path, *LOGISTIC)
    assert "'Class'" in msg and "0 or 1" in msg and "found 2 at line 4" in msg
    assert "Labels must be 0/1" in msg and ".map(" in msg and "np." not in msg


def test_reliability_only_one_class(project, tmp_path, monkeypatch):
    path = _csv(tmp_path, "No_pregnant,Class\n1,1\n2,1\n3,1\n")
    msg = _fails(project, monkeypatch, path, *LOGISTIC)
    assert "'Class'" in msg and "only class 1" in msg and "both classes" in msg


def test_reliability_duplicated_column_name(project, tmp_path, monkeypatch):
    msg = _fails(project, monkeypatch, _csv(tmp_path, "mpg,cylinders,mpg\n18,8,1\n15,4,2\n"))
    assert "duplicated column" in msg and "'mpg'" in msg


def test_reliability_not_utf8(project, tmp_path, monkeypatch):
    msg = _fails(
        project, monkeypatch, _csv(tmp_path, "mpg,cylinders\n18,8\n15\xe9,4\n".encode("latin-1"))
    )
    assert "not UTF-8" in msg and "line 3" in msg


def test_reliability_utf8_bom_is_stripped_and_trains(project, tmp_path, monkeypatch):
    path = _csv(tmp_path, b"\xef\xbb\xbfcylinders,mpg\n8,18\n4,30\n6,22\n4,32\n")
    monkeypatch.chdir(project)
    seed_store(project)
    result = train.run(compose(*LINEAR, f"dataset.path={path}", *LEAN))
    [run] = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset.features"] == "[cylinders]"
    assert result.coef_ is not None and len(result.coef_) == 1


def test_reliability_all_features_after_bom_have_clean_names(tmp_path):
    from gradtrack.data.load import load_dataset

    path = _csv(tmp_path, b"\xef\xbb\xbfcylinders,weight,mpg\n8,3504,18\n4,2000,30\n")
    dcfg = compose(*LINEAR, "dataset.features=[]").dataset
    ds = load_dataset(dcfg, path, "regression")
    assert ds.feature_names == ["cylinders", "weight"]


def test_reliability_path_does_not_exist_cli(project, tmp_path):
    """A user's own file: check the path (gradtrack-data makes only the project's CSVs);
    a sweep says it in the same words, for every job, before any run."""
    err = _cli_fails(project, tmp_path / "nope.csv")
    assert "nope.csv: file not found. Check dataset.path" in err
    assert "gradtrack-data" not in err
    sweep = _cli_fails(project, tmp_path / "nope.csv", "-m", *LINEAR, "optimizer.lr=0.1,0.2")
    assert "nope.csv: file not found. Check dataset.path" in sweep and "2 of 2 jobs" in sweep


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]])
def test_reliability_bad_file_stops_a_sweep_before_any_job(project, tmp_path, launcher):
    """A file that exists but that no job can read is found by the sweep's check, in
    the words a single run gets (a job's failure, exit 1, Hydra's warning that the
    sweep's callback raised, before)."""
    path = _csv(tmp_path, "mpg,cylinders\n18,8\nabc,4\n")
    single = _cli_fails(project, path)
    reason = single.splitlines()[0].removeprefix("gradtrack: error: ")
    assert "non-numeric values ('abc') at line 3" in reason
    sweep = _cli_fails(project, path, "-m", *LINEAR, "optimizer.lr=0.1,0.2", *launcher)
    assert "sweep not started: 2 of 2 jobs" in sweep and reason in sweep, sweep
    assert "Warning" not in sweep and "Launching" not in sweep, sweep


def test_reliability_default_data_missing_says_run_gradtrack_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a project without data/
    with pytest.raises(DataError) as err:
        train.run(compose(*LINEAR))
    assert "regression.csv" in str(err.value) and "gradtrack-data" in str(err.value)
    assert not (tmp_path / "mlruns").exists()


def test_reliability_input_error_leaves_earlier_runs_and_store_untouched(
    project, tmp_path, monkeypatch
):
    monkeypatch.chdir(project)
    seed_store(project)
    train.run(compose("+experiment=seed_fence", "backend=numpy", *LEAN))
    db = project / "mlruns" / "mlflow.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    listing = sorted(p.relative_to(project) for p in (project / "mlruns").rglob("*"))
    header_only = _csv(tmp_path, "mpg,cylinders\n")
    with pytest.raises(DataError):
        train.run(compose(*LINEAR, f"dataset.path={header_only}"))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.relative_to(project) for p in (project / "mlruns").rglob("*")) == listing
    [run] = mlflow_runs(project)
    assert run.info.status == "FINISHED"


# -- fetch: checksums and the mirror ------------------------------------------------


def _mirror(tmp: Path, prepared_data: Path, corrupt: str | None = None, drop: str | None = None):
    from gradtrack.data.sources import SOURCES

    mirror = tmp / "mirror"
    mirror.mkdir()
    for s in SOURCES:
        if s.filename == drop:
            continue
        shutil.copyfile(prepared_data / "raw" / s.filename, mirror / s.filename)
        if s.filename == corrupt:
            with open(mirror / s.filename, "ab") as fh:
                fh.write(b"tampered\n")
    return mirror


def test_reliability_fetch_refuses_bad_checksum_and_keeps_previous_copy_cli(
    tmp_path, prepared_data
):
    from gradtrack.data.fetch import sha256_of
    from gradtrack.data.sources import AUTO_MPG

    mirror = _mirror(tmp_path, prepared_data, corrupt=AUTO_MPG.filename)
    root = tmp_path / "proj"
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    # The local copy is stale (edited by hand), so fetch must consult the mirror.
    previous = (prepared_data / "raw" / AUTO_MPG.filename).read_bytes() + b"local edit\n"
    (raw / AUTO_MPG.filename).write_bytes(previous)
    out = run_cli(
        ["fetch", "--root", str(root)],
        tmp_path,
        env={"GRADTRACK_DATA_MIRROR": str(mirror)},
        module="gradtrack.data.cli",
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert AUTO_MPG.filename in out.stderr
    assert sha256_of(mirror / AUTO_MPG.filename) in out.stderr  # what it got
    assert AUTO_MPG.sha256 in out.stderr  # what it expected
    assert "previous good copy is kept" in out.stderr or "refused" in out.stderr
    assert (raw / AUTO_MPG.filename).read_bytes() == previous
    assert [p.name for p in raw.iterdir()] == [AUTO_MPG.filename]  # no temp files left


def test_reliability_fetch_bad_checksum_writes_nothing(tmp_path, prepared_data, monkeypatch):
    from gradtrack.data.fetch import fetch_all
    from gradtrack.data.sources import PIMA

    mirror = _mirror(tmp_path, prepared_data, corrupt=PIMA.filename)
    monkeypatch.setenv("GRADTRACK_DATA_MIRROR", str(mirror))
    raw = tmp_path / "proj" / "data" / "raw"
    with pytest.raises(DataError) as err:
        fetch_all(raw, tmp_path / "proj")
    assert PIMA.filename in str(err.value) and PIMA.sha256 in str(err.value)
    assert "nothing was written" in str(err.value)
    assert not (raw / PIMA.filename).exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_reliability_fetch_keeps_good_copy_when_mirror_is_corrupt(
    tmp_path, prepared_data, monkeypatch
):
    from gradtrack.data.fetch import fetch_all
    from gradtrack.data.sources import AUTO_MPG

    mirror = _mirror(tmp_path, prepared_data, corrupt=AUTO_MPG.filename)
    monkeypatch.setenv("GRADTRACK_DATA_MIRROR", str(mirror))
    raw = tmp_path / "proj" / "data" / "raw"
    raw.mkdir(parents=True)
    good = (prepared_data / "raw" / AUTO_MPG.filename).read_bytes()
    (raw / AUTO_MPG.filename).write_bytes(good)
    fetch_all(raw, tmp_path / "proj")
    assert (raw / AUTO_MPG.filename).read_bytes() == good


def test_reliability_fetch_mirror_missing_a_file(tmp_path, prepared_data, monkeypatch):
    from gradtrack.data.fetch import fetch_all
    from gradtrack.data.sources import PIMA

    mirror = _mirror(tmp_path, prepared_data, drop=PIMA.filename)
    monkeypatch.setenv("GRADTRACK_DATA_MIRROR", str(mirror))
    with pytest.raises(DataError) as err:
        fetch_all(tmp_path / "proj" / "data" / "raw", tmp_path / "proj")
    msg = str(err.value)
    assert str(mirror / PIMA.filename) in msg and "missing from the data mirror" in msg
    assert "GRADTRACK_DATA_MIRROR" in msg


def test_reliability_fetch_mirror_env_not_a_directory(tmp_path, monkeypatch):
    from gradtrack.data.fetch import fetch_all

    monkeypatch.setenv("GRADTRACK_DATA_MIRROR", str(tmp_path / "no-such-dir"))
    with pytest.raises(DataError) as err:
        fetch_all(tmp_path / "raw", tmp_path)
    assert "no-such-dir" in str(err.value) and "not a directory" in str(err.value)


# -- files other tools write (issue 13) ---------------------------------------------

AUTO = "mpg,cylinders,weight\n18,8,3504\n15,8,3693\n30,4,2000\n32,4,1900\n24,6,2800\n"


def _with_index(text: str, name: str = "") -> str:
    """What pandas' df.to_csv(path) writes: the row index as an unnamed first column."""
    head, *rows = text.strip().split("\n")
    return "\n".join([f"{name},{head}"] + [f"{i},{r}" for i, r in enumerate(rows)]) + "\n"


@pytest.mark.parametrize("name", ["", "Unnamed: 0"], ids=["to_csv", "to_csv_twice"])
def test_reliability_pandas_index_column_dropped_with_note(
    project, tmp_path, monkeypatch, capsys, name
):
    monkeypatch.chdir(project)
    plain = _csv(tmp_path, AUTO, "plain.csv")
    indexed = _csv(tmp_path, _with_index(AUTO, name), "indexed.csv")
    over = (*LINEAR, "dataset.features=[]", "dataset.standardize=true", "tracking.enabled=false")
    want = train.run(compose(*over, f"dataset.path={plain}"))
    capsys.readouterr()
    got = train.run(compose(*over, f"dataset.path={indexed}"))
    err = capsys.readouterr().err
    assert "gradtrack: note:" in err and "dropped column 1" in err and "pandas index" in err
    assert "index=False" in err
    assert got.coef_.tolist() == want.coef_.tolist()  # trained on the same two features
    assert got.intercept_ == want.intercept_


def test_reliability_unnamed_column_with_data_refused_cli(project, tmp_path):
    text = "mpg,,cylinders\n18,7,8\n15,3,8\n30,9,4\n"  # not 0..n-1: not a saved index
    err = _cli_fails(project, _csv(tmp_path, text), *LINEAR, "dataset.features=[]")
    assert "column 2 (no name)" in err and "no name in the header" in err
    assert "Give it a name" in err


def test_reliability_trailing_comma_on_every_line_cli(project, tmp_path):
    lines = AUTO.strip().split("\n")
    err = _cli_fails(project, _csv(tmp_path, ",\n".join(lines) + ",\n"), *LINEAR)
    assert "column 4 (no name)" in err and "trailing comma" in err
    assert "no rows left" not in err


def test_reliability_trailing_comma_on_data_lines_only(project, tmp_path, monkeypatch):
    head, *rows = AUTO.strip().split("\n")
    msg = _fails(project, monkeypatch, _csv(tmp_path, head + "\n" + ",\n".join(rows) + ",\n"))
    assert "trailing comma" in msg and "lines 2, 3" in msg and "decimal" not in msg


@pytest.mark.parametrize(
    "sep, word", [(";", "semicolon (;)-delimited"), ("\t", "tab-delimited")], ids=["semi", "tab"]
)
def test_reliability_other_delimiter_named_cli(project, tmp_path, sep, word):
    text = AUTO.replace(",", sep)
    err = _cli_fails(project, _csv(tmp_path, text), *LINEAR)
    assert word in err and "delimiter" in err and "available columns" not in err


def test_reliability_european_semicolon_file_with_decimal_commas(project, tmp_path, monkeypatch):
    msg = _fails(project, monkeypatch, _csv(tmp_path, "mpg;cylinders\n18,5;8\n15;4\n"))
    assert "semicolon" in msg and "decimal point" in msg


def test_reliability_yes_no_labels_cli(project, tmp_path):
    path = _csv(tmp_path, "No_pregnant,Class\n1,yes\n2,no\n3,no\n")
    err = _cli_fails(project, path, *LOGISTIC)
    assert "Labels must be 0/1" in err and ".map({'no': 0, 'yes': 1})" in err
    assert "decimal" not in err


def test_reliability_labels_1_2_cli(project, tmp_path):
    err = _cli_fails(project, _csv(tmp_path, "No_pregnant,Class\n1,1\n2,2\n3,2\n"), *LOGISTIC)
    assert "found 2 at lines 3, 4" in err and ".map({1: 0, 2: 1})" in err
    assert "np." not in err and "2.0" not in err


def test_reliability_target_among_features_refused_before_data(project, tmp_path, monkeypatch):
    from gradtrack.errors import ConfigError

    monkeypatch.chdir(project)
    with pytest.raises(ConfigError) as err:
        train.run(compose(*LINEAR, "dataset.features=[mpg,cylinders]", "tracking=none"))
    assert "target column 'mpg'" in str(err.value)
    assert not (project / "mlruns").exists()


def test_reliability_coefficients_csv_holds_plain_numbers(project, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(project)
    seed_store(project)
    over = ("epochs=3", "tracking.log_model=false")
    result = train.run(compose(*LINEAR, *over))
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    local = client.download_artifacts(result.run_id, "coefficients.csv", str(tmp_path))
    text = Path(local).read_text()
    assert "np." not in text
    rows = [line.split(",") for line in text.strip().split("\n")[1:]]
    assert [r[0] for r in rows] == ["cylinders", "intercept"]
    for row in rows:
        assert all(float(v) == float(v) for v in row[1:])  # parses as plain numbers
    assert float(rows[0][1]) == result.coef_[0]


def test_reliability_true_is_not_a_number(project, tmp_path, monkeypatch):
    # pandas' C parser reads a column of True/False as 1.0/0.0; gradtrack must not.
    msg = _fails(project, monkeypatch, _csv(tmp_path, "mpg,cylinders\n18,True\n15,False\n"))
    assert "'True', 'False'" in msg and "lines 2, 3" in msg


def test_reliability_large_plain_file_reports_exact_lines(project, tmp_path, monkeypatch):
    # Big enough for several scan chunks; a blank line and blank cells far down.
    rows = [f"{20 + i % 7}.5,{4 + i % 3}" for i in range(300_000)]
    rows[150_000] = ""  # a blank line (skipped) shifts later line numbers by one
    rows[250_000] = "19.5,"
    path = _csv(tmp_path, "mpg,cylinders\n" + "\n".join(rows) + "\n")
    msg = _fails(project, monkeypatch, path, *LINEAR, "dataset.dropna=false")
    assert "'cylinders'" in msg and "line 250002" in msg


def test_reliability_fast_and_careful_readers_agree(tmp_path):
    from gradtrack.data.load import load_dataset

    body = "".join(f"{10 + i * 0.37:.4f},{i % 5},{3000 - i}\n" for i in range(2000))
    body = body.replace("3000\n", "\n", 1)  # a blank cell, dropped with dropna
    plain = _csv(tmp_path, "mpg,cylinders,weight\n" + body, "plain.csv")
    # A quote anywhere sends the file to the careful text reader.
    quoted = _csv(tmp_path, '"mpg",cylinders,weight\n' + body, "quoted.csv")
    dcfg = compose(*LINEAR, "dataset.features=[]", "dataset.standardize=true").dataset
    a, b = load_dataset(dcfg, plain, "regression"), load_dataset(dcfg, quoted, "regression")
    assert a.n_dropped == b.n_dropped == 1 and a.n_rows == b.n_rows == 1999
    assert np.array_equal(a.X_raw, b.X_raw) and np.array_equal(a.y_raw, b.y_raw)
    assert np.array_equal(a.X, b.X) and a.feature_names == b.feature_names
