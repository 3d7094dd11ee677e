"""vgkern.sweep, the sweep/plot/summary/demo commands and the plots.

What is checked:
* the sweep table is bit-identical to running each configuration by hand (MLP.step, LSTM/RNN
  step, the documented data and SGD), for serial, threaded and Dask (LocalCluster, 2 processes
  on loopback) execution;
* nothing is lost: a sweep killed with SIGKILL (or stopped with SIGINT / Ctrl-C) mid-run and
  then resumed ends with every configuration exactly once, and the file is readable at any
  time; torn journal records are dropped; resume skips finished configurations;
* bad input fails with a clear error before any work starts;
* the seed's claims on fixed seeds (sigmoid vanishes, He-ReLU keeps gain ~1, BN changes sigmoid);
* the CLI and the plots (files exist, are big enough, have non-blank pixels).

Kept small for CI (2 cores): tiny grids, one module-scoped Dask cluster.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vgkern
import vgkern.sweeps as S
from vgkern import cli
from vgkern.sweeps import journal, run, store

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

STATS = [c for c in S.STAT_COLUMNS]
REC_FIELDS = ["h_grad_norm", "c_grad_norm", "x_grad_norm", "log10_h_grad_norm",
              "log10_c_grad_norm", "log10_x_grad_norm", "forget_gate_mean", "saturated_fraction"]


# --------------------------------------------------------------------------------------------
# An independent re-implementation of what one configuration computes (the documented recipe)
# --------------------------------------------------------------------------------------------

def _digits(split="train"):
    """The documented data: sklearn's digits, stratified 80/20 split (random_state 0),
    standardised per pixel with the training split's statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        d.data.astype(np.float64), d.target.astype(np.int64), test_size=0.2, random_state=0,
        stratify=d.target)
    mean, sd = x_train.mean(0), x_train.std(0)
    sd[sd == 0] = 1.0
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return (x - mean) / sd, y


def _optimizer(c, net):
    """The documented optimizer of configuration c."""
    if c["optimizer"] == "sgd":
        return vgkern.optim.SGD(net, c["lr"], weight_decay=c["weight_decay"])
    if c["optimizer"] == "momentum":
        return vgkern.optim.SGD(net, c["lr"], momentum=c["momentum"],
                                weight_decay=c["weight_decay"])
    kind = vgkern.optim.Adam if c["optimizer"] == "adam" else vgkern.optim.AdamW
    return kind(net, c["lr"], weight_decay=c["weight_decay"])


def _evaluated(c, s):
    every = c["eval_every"]
    return every > 0 and (s % every == 0 or s == c["steps"] - 1)


def reference(c):
    """-> {column: array over the configuration's rows, in (step, layer) order}."""
    dtype, B, W, L, steps = c["dtype"], c["batch"], c["width"], c["depth"], c["steps"]
    rows = {name: [] for name in STATS}

    def add(rep_values, n):
        for name in STATS:
            rows[name].append(np.asarray(rep_values.get(name, np.full(n, np.nan)), np.float64)
                              * np.ones(n))

    def data(step, d_in, d_out):
        rng = np.random.default_rng([c["seed"], step])
        if c["data"] == "digits":
            x, y = _digits()
            idx = rng.choice(len(x), size=B, replace=False)
            return x[idx].astype(dtype), y[idx]
        return (rng.standard_normal((B, d_in)).astype(dtype),
                rng.standard_normal((B, d_out)).astype(dtype))

    x_test, y_test = _digits("test")
    x_test = x_test.astype(dtype)
    if c["model"] == "mlp":
        digits = c["data"] == "digits"
        sizes = [64] + [W] * (L - 1) + [10] if digits else [W] * (L + 1)
        kw = dict(sigma_w=c["sigma_w"], sigma_b=c["sigma_b"]) if c["init"] == "scaled_normal" else {}
        net = vgkern.MLP(sizes, activation=c["activation"], init=c["init"], dtype=dtype,
                         seed=c["seed"], batch_norm=c["batch_norm"], **kw)
        opt = _optimizer(c, net)
        for s in range(steps):
            x, t = data(s, sizes[0], sizes[-1])
            rep = net.step(x, t, loss="cross_entropy" if digits else "mse",
                           log_scale=c["log_scale"])
            opt.step(rep)
            values = {f: getattr(rep, f) for f in vgkern.report.FIELDS}
            values["loss"] = rep.loss
            if _evaluated(c, s):
                values["test_loss"], values["test_accuracy"] = net.evaluate(x_test, y_test)
            add(values, L)
    else:
        digits = c["data"] == "digits"
        I = 8 if digits else W
        if c["model"] == "lstm":
            net = vgkern.LSTM(I, W, dtype=dtype, seed=c["seed"], forget_bias=c["forget_bias"])
        else:
            net = vgkern.RNN(I, W, nonlinearity=c["activation"], dtype=dtype, seed=c["seed"])
        head = vgkern.MLP([W, 10], activation="identity", dtype=dtype, seed=c["seed"]) if digits else None
        opt = _optimizer(c, net)
        head_opt = _optimizer(c, head) if digits else None
        for s in range(steps):
            if digits:
                x, y = data(s, None, None)
                x_seq = np.ascontiguousarray(x.reshape(B, 8, 8).transpose(1, 0, 2))
                out = net.forward(x_seq)
                h_last = out[1][0] if c["model"] == "lstm" else out[1]
                hrep = head.step(np.ascontiguousarray(h_last), y, loss="cross_entropy",
                                 compute_input_grad=True)
                rep = net.backward(None, grad_hT=head.input_grad)
                loss = hrep.loss
                head_opt.step(hrep)
            else:
                rng = np.random.default_rng([c["seed"], s])
                x_seq = rng.standard_normal((L, B, W)).astype(dtype)
                t = rng.standard_normal((B, W)).astype(dtype)
                rep = net.step(x_seq, t, loss="mse")
                loss = rep.loss
            opt.step(rep)
            values = {f: getattr(rep, f) for f in REC_FIELDS}
            for f in ("weight_ih_grad_norm", "weight_hh_grad_norm", "bias_grad_norm",
                      *vgkern.report.SEQUENCE_UPDATE_FIELDS):
                values[f] = getattr(rep, f)
                if not f.startswith("log10_"):
                    values["log10_" + f] = getattr(rep, "log10_" + f)
            values["loss"] = loss
            if _evaluated(c, s):
                test_seq = np.ascontiguousarray(x_test.reshape(-1, 8, 8).transpose(1, 0, 2))
                values["test_loss"], values["test_accuracy"] = net.evaluate(test_seq, y_test,
                                                                            head)
            add(values, L)
    return {name: np.concatenate(v) for name, v in rows.items()}


EXACT_GRID = [
    dict(model="mlp", depth=[2, 3], width=8, batch=16, activation=["sigmoid", "relu"],
         init=["xavier_normal", "scaled_normal"], sigma_w=1.5, sigma_b=0.1,
         batch_norm=[False, True], steps=2, lr=0.05, seed=[0, 1]),
    dict(model="mlp", data="digits", depth=3, width=8, batch=32, activation="elu", steps=2,
         log_scale=[False, True], dtype=["float32", "float64"]),
    dict(model=["lstm", "rnn"], seq_len=[3, 5], width=6, batch=4, activation=["tanh", "relu"],
         steps=2, lr=0.1),
    dict(model=["lstm", "rnn"], data="digits", width=6, batch=16, steps=2),
    dict(depth=3, width=8, batch=16, activation="tanh", batch_norm=[False, True], steps=2,
         init=["he_normal", "lecun_normal", "he_uniform", "xavier_uniform", "orthogonal"]),
]


def assert_matches_reference(frame, configs):
    assert frame["config_id"].tolist() == [c["config_id"] for c in configs
                                           for _ in range(c["steps"] * c["depth"])]
    for c in configs:
        rows = frame[frame["config_id"] == c["config_id"]]
        assert rows["step"].tolist() == [s for s in range(c["steps"]) for _ in range(c["depth"])]
        assert rows["layer"].tolist() == list(range(c["depth"])) * c["steps"]
        for key in S.CONFIG_COLUMNS:
            got, want = rows[key].iloc[0], c[key]
            if want is None or (isinstance(want, float) and math.isnan(want)):
                assert pd.isna(got), (key, got)
            else:
                assert got == want, (key, got, want)
        ref = reference(c)
        for name in STATS:
            got = rows[name].to_numpy(np.float64)
            # bit-identical: same bytes (NaN patterns included)
            assert got.tobytes() == ref[name].tobytes(), (c, name, got, ref[name])


@pytest.fixture(scope="module")
def exact_configs():
    return vgkern.sweep_configs(EXACT_GRID)


@pytest.fixture(scope="module")
def serial_table(exact_configs):
    return vgkern.sweep(EXACT_GRID, workers=1)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=50)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_grid_expansion_counts_and_canonical_configs(exact_configs):
    by_model = pd.Series([c["model"] for c in exact_configs]).value_counts().to_dict()
    # MLP: 2 depths x 2 acts x (xavier + scaled) x 2 BN x 2 seeds = 32, digits: 2 x 2 = 4,
    # other inits: 5 x 2 = 10; LSTM: 2 lengths + digits; RNN: 2 acts x 2 lengths + 1 digits
    assert by_model == {"mlp": 46, "rnn": 5, "lstm": 3}
    lstm = [c for c in exact_configs if c["model"] == "lstm"]
    assert all(c["activation"] is None and c["init"] is None and not c["batch_norm"] for c in lstm)
    assert sorted(c["depth"] for c in lstm) == [3, 5, 8]  # digits: T = 8 rows of the image
    xav = [c for c in exact_configs if c["init"] == "xavier_normal"]
    assert all(math.isnan(c["sigma_w"]) for c in xav)  # sigma only for scaled_normal
    # duplicates collapse: listing the same value twice or a key that does not apply
    assert len(vgkern.sweep_configs(depth=[3, 3], activation=["tanh", "tanh"])) == 1
    assert len(vgkern.sweep_configs([dict(model=["mlp", "lstm"], depth=4,
                                          batch_norm=[False, True])])) == 3


def test_config_id_is_sha256_of_canonical_json_and_stable_across_processes():
    c = vgkern.sweep_configs(depth=7, activation="elu", init="scaled_normal", sigma_w=1.5)[0]
    canon = {k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in c.items() if k != "config_id"}
    canon["schema"] = S.SCHEMA_VERSION
    import hashlib

    want = hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()[:16]
    assert c["config_id"] == want
    code = ("import vgkern; print(vgkern.sweep_configs(depth=7, activation='elu', "
            "init='scaled_normal', sigma_w=1.5)[0]['config_id'])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == want
    # equal values in other spellings give the same id
    assert vgkern.sweep_configs(depth=np.int64(7), activation="ELU", init="scaled_normal",
                                sigma_w=1.5, sigma_b=0, lr=0.01)[0]["config_id"] == want


def test_serial_sweep_is_bit_identical_to_running_each_configuration(serial_table, exact_configs):
    assert_matches_reference(serial_table, exact_configs)


TRAINING_GRID = [
    dict(model="mlp", data="digits", depth=3, width=8, batch=16, steps=4, lr=0.05,
         optimizer=["momentum", "adam", "adamw"], weight_decay=[0.0, 0.01], eval_every=2),
    dict(model="mlp", depth=3, width=8, batch=16, steps=2, optimizer="momentum",
         momentum=[0.5, 0.9], log_scale=True),
    dict(model=["lstm", "rnn"], data="digits", width=6, batch=8, steps=4, optimizer="adam",
         eval_every=2),
]


def test_optimizers_and_test_metrics_match_the_documented_recipe():
    """The optimizer keys and eval_every: bit-identical to the documented recipe (vgkern.optim
    after each step; test metrics on the test split at steps 0, eval_every, ... and the last)."""
    configs = vgkern.sweep_configs(TRAINING_GRID)
    assert len(configs) == 6 + 2 + 2
    table = vgkern.sweep(TRAINING_GRID, workers=1)
    assert_matches_reference(table, configs)
    digits = table[table["data"] == "digits"]
    evaluated = sorted(digits.loc[digits["test_accuracy"].notna(), "step"].unique().tolist())
    assert evaluated == [0, 2, 3]  # every eval_every steps, and the last
    assert digits["test_accuracy"].dropna().between(0, 1).all()
    momentum = table[table["optimizer"] == "momentum"]
    assert sorted(momentum["momentum"].unique().tolist()) == [0.5, 0.9]
    assert table.loc[table["optimizer"] != "momentum", "momentum"].isna().all()
    mlp = table[table["model"] == "mlp"]
    assert np.isfinite(mlp["weight_change"]).all() and (mlp["weight_change"] > 0).all()


@pytest.mark.parametrize("grid, message", [
    (dict(momentum=0.5), r"momentum applies to optimizer 'momentum' only"),
    (dict(eval_every=5), r"eval_every measures the test split of data 'digits'"),
    (dict(optimizer="rmsprop"), r"grid key 'optimizer': unknown value 'rmsprop'"),
    (dict(weight_decay=-1.0), r"grid key 'weight_decay': expected a number >= 0"),
])
def test_training_keys_are_checked(grid, message):
    with pytest.raises(ValueError, match=message):
        vgkern.sweep_configs(**grid)


def test_threaded_sweep_is_bit_identical(serial_table, exact_configs):
    threaded = vgkern.sweep(EXACT_GRID, workers=2)
    assert_matches_reference(threaded, exact_configs)
    pd.testing.assert_frame_equal(threaded, serial_table, check_exact=True)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:  # a user's executor
        mine = vgkern.sweep(EXACT_GRID, executor=pool, batch_size=4)
    pd.testing.assert_frame_equal(mine, serial_table, check_exact=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning",
                            "ignore::UserWarning")
def test_dask_sweep_is_bit_identical_and_streams_to_the_output(serial_table, exact_configs,
                                                               dask_client, tmp_path):
    out = tmp_path / "dask.parquet"
    table = vgkern.sweep(EXACT_GRID, executor=dask_client.get_executor(pure=False),
                         out=str(out), flush_interval=0)
    assert_matches_reference(table, exact_configs)
    pd.testing.assert_frame_equal(table, serial_table, check_exact=True)
    pd.testing.assert_frame_equal(vgkern.read_results(out), serial_table, check_exact=True)
    assert not os.path.exists(str(out) + ".journal")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning",
                            "ignore::UserWarning")
def test_cli_scheduler_runs_on_a_dask_cluster(dask_client, tmp_path, capsys):
    out = tmp_path / "s.csv"
    address = dask_client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    rc = cli.main(["sweep", "--depth", "2..4", "--activation", "tanh,relu", "--width", "8",
                   "--batch", "8", "--out", str(out), "--scheduler", address, "--no-progress"])
    assert rc == 0
    got = vgkern.read_results(out)
    want = vgkern.sweep(depth=[2, 3, 4], activation=["tanh", "relu"], width=8, batch=8)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert "on the Dask scheduler at tcp://127.0.0.1" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning",
                            "ignore::UserWarning")
def test_cli_dask_local_cluster(tmp_path):
    out = tmp_path / "local.parquet"
    proc = subprocess.run([sys.executable, "-m", "vgkern.cli", "sweep", "--depth", "2,3",
                           "--width", "8", "--batch", "8", "--seed", "0..2", "--dask-local", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "local Dask cluster of 2 processes" in proc.stderr
    want = vgkern.sweep(depth=[2, 3], width=8, batch=8, seed=[0, 1, 2])
    pd.testing.assert_frame_equal(vgkern.read_results(out), want, check_exact=True)


# --------------------------------------------------------------------------------------------
# Nothing is lost
# --------------------------------------------------------------------------------------------

KILL_GRID = dict(depth=30, width=64, batch=128, steps=3,
                 activation=["sigmoid", "tanh", "relu", "elu"], seed=list(range(20)))
KILL_ARGS = ["--depth", "30", "--width", "64", "--batch", "128", "--steps", "3",
             "--activation", "sigmoid,tanh,relu,elu", "--seed", "0..19", "--workers", "1",
             "--no-progress"]


@pytest.fixture(scope="module")
def kill_reference():
    return vgkern.sweep(**KILL_GRID, workers=2)


def _sweep_cmd(out, *extra):
    return [sys.executable, "-m", "vgkern.cli", "sweep", *KILL_ARGS, "--out", str(out), *extra]


def _finished_ids(out):
    frame = vgkern.read_results(out)
    return frame, frame.groupby("config_id").size()


def _output_configs(out):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if str(out).endswith(".csv"):
            table = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(
                include_columns=["config_id"]))
        else:
            table = pq.read_table(out, columns=["config_id"])
        return len(set(table.column(0).to_pylist()))
    except (OSError, ValueError, pa.ArrowException):
        return 0


def _journal_ids(out):
    path = str(out) + ".journal"
    try:
        with open(path, "rb") as f:
            return {c["config_id"] for c, _ in journal.read_journal(f, path)[0]}
    except (OSError, ValueError):
        return set()


def _journal_records(out):
    return len(_journal_ids(out))


def _assert_complete(out, configs):
    frame, counts = _finished_ids(out)
    assert sorted(counts.index) == sorted(c["config_id"] for c in configs)
    for c in configs:  # each configuration exactly once: steps * depth rows
        assert counts[c["config_id"]] == c["steps"] * c["depth"]
    assert not frame.duplicated(["config_id", "step", "layer"]).any()
    assert not os.path.exists(str(out) + ".journal")
    return frame


# `python -m vgkern.cli ...` with Python's own Ctrl-C handler put back first: a test run started
# in the background of a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and so
# would the sweep, which would then never see the Ctrl-C.
_WITH_CTRL_C = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "runpy.run_module('vgkern.cli', run_name='__main__', alter_sys=True)")


def _run_until(cmd, predicate, sig, timeout=120, extra_delay=0.0):
    """Start the sweep, send `sig` once predicate() holds (and `extra_delay` seconds have
    passed after that); -> (returncode, stderr)."""
    assert cmd[1:3] == ["-m", "vgkern.cli"], cmd
    cmd = [cmd[0], "-c", _WITH_CTRL_C, *cmd[3:]]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        t0 = time.time()
        try:
            while proc.poll() is None and not predicate():
                assert time.time() - t0 < timeout, "timeout waiting for the sweep"
                time.sleep(0.01)
            time.sleep(extra_delay)
            assert proc.poll() is None, ("the sweep ended before it could be stopped: "
                                         + proc.stderr.read())
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return proc.returncode, err


@pytest.mark.parametrize("flush", ["0.1", "1000"], ids=["frequent-rebuilds", "journal-only"])
def test_sigkill_mid_run_then_resume_keeps_every_configuration_exactly_once(
        tmp_path, flush, kill_reference):
    out = tmp_path / "kill.parquet"
    configs = vgkern.sweep_configs(**KILL_GRID)
    if flush == "1000":  # the output is rebuilt only at the end: everything is in the journal
        ready = lambda: _journal_records(out) >= 4
    else:
        ready = lambda: _output_configs(out) >= 4
    rc, _ = _run_until(_sweep_cmd(out, "--flush-interval", flush), ready, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    # The output is readable right after the kill and holds only whole configurations.
    frame, counts = _finished_ids(out)
    assert (counts == 90).all()
    if flush == "1000":
        assert len(counts) == 0
    else:
        assert len(counts) >= 4
    # (a kill between a rebuild and the journal reset leaves records in both: counted once)
    before = len(set(counts.index) | _journal_ids(out))
    assert 4 <= before < len(configs)
    # Resume: the same command skips what is finished (output and journal) and completes.
    done = subprocess.run(_sweep_cmd(out, "--flush-interval", flush), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {before} of {len(configs)} configurations are already finished" in done.stderr
    frame = _assert_complete(out, configs)
    # and the values are those of an uninterrupted run
    pd.testing.assert_frame_equal(frame, kill_reference, check_exact=True)


def _finished_or_journaled(out, rows_per_config):
    if not os.path.exists(out):
        return _journal_ids(out)
    frame, counts = _finished_ids(out)
    # the output is readable after every kill and holds whole, unique configurations only
    assert (counts == rows_per_config).all()
    assert not frame.duplicated(["config_id", "step", "layer"]).any()
    return set(counts.index) | _journal_ids(out)


# Slower configurations than KILL_GRID (about 0.15 s each) so that every kill lands mid-run.
REPEATED_KILL_GRID = dict(KILL_GRID, steps=20, seed=list(range(10)))
REPEATED_KILL_ARGS = ["--depth", "30", "--width", "64", "--batch", "128", "--steps", "20",
                      "--activation", "sigmoid,tanh,relu,elu", "--seed", "0..9", "--workers",
                      "1", "--no-progress", "--flush-interval", "0.05"]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_repeated_sigkills_at_random_moments_lose_and_duplicate_nothing(tmp_path, suffix):
    """Kill the same sweep again and again, each time after it has finished a random number of
    further configurations plus a random extra delay (so kills land between configurations,
    inside a configuration and during output rebuilds), then let it finish."""
    out = tmp_path / f"kills.{suffix}"
    cmd = [sys.executable, "-m", "vgkern.cli", "sweep", *REPEATED_KILL_ARGS, "--out", str(out)]
    configs = vgkern.sweep_configs(**REPEATED_KILL_GRID)
    rng = np.random.default_rng(7)
    finished = set()
    for _ in range(5):
        target = len(finished) + int(rng.integers(1, 4))
        # a cheap trigger (column reads only); the full checks run after the kill
        progressed = lambda: _output_configs(out) + _journal_records(out) >= target
        rc, _ = _run_until(cmd, progressed, signal.SIGKILL,
                           extra_delay=float(rng.uniform(0, 0.15)))
        assert rc == -signal.SIGKILL
        now = _finished_or_journaled(out, rows_per_config=20 * 30)
        assert finished <= now  # nothing finished is ever lost
        finished = now
    # (the trigger may count a configuration twice, in the output and the journal)
    assert 3 <= len(finished) < len(configs)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(finished)} of {len(configs)}" in done.stderr
    frame = _assert_complete(out, configs)
    reference = vgkern.sweep(**REPEATED_KILL_GRID, workers=2)
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)


def test_sigint_stops_cleanly_and_keeps_everything_finished(tmp_path, kill_reference):
    out = tmp_path / "int.csv"
    configs = vgkern.sweep_configs(**KILL_GRID)
    # two worker threads: Ctrl-C reaches the main thread while the workers compute
    rc, err = _run_until(_sweep_cmd(out, "--flush-interval", "1000", "--workers", "2"),
                         lambda: _journal_records(out) >= 3, signal.SIGINT)
    assert rc == 130, err
    assert "interrupted:" in err and "run the same command again to resume" in err
    frame, counts = _finished_ids(out)  # everything finished is in the output file now
    assert len(counts) >= 3 and (counts == 90).all()
    assert not os.path.exists(str(out) + ".journal")
    done = subprocess.run(_sweep_cmd(out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(counts)} of {len(configs)}" in done.stderr
    frame = _assert_complete(out, configs)
    pd.testing.assert_frame_equal(frame, kill_reference, check_exact=True)


def test_torn_journal_records_are_dropped_on_resume(tmp_path):
    out = tmp_path / "torn.parquet"
    grid = dict(depth=[2, 3, 4], width=8, batch=8, seed=[0, 1])
    configs = vgkern.sweep_configs(**grid)
    full = vgkern.sweep(**grid)
    vgkern.sweep(**grid, out=str(out))
    # Simulate a run killed after two configurations: the output holds nothing yet, the journal
    # two whole records and a third one cut short, then garbage.
    store.atomic_write(S.arrow_schema().empty_table(), str(out), "parquet")
    records = [journal.journal_record(
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()},
        run.run_config(c)) for c in configs[:3]]
    with open(str(out) + ".journal", "wb") as f:
        f.write(journal.JOURNAL_MAGIC + records[0] + records[1] + records[2][:len(records[2]) // 2])
    calls = []
    real = run.run_config
    try:
        run.run_config = lambda c: calls.append(c["config_id"]) or real(c)
        table = vgkern.sweep(**grid, out=str(out), workers=1)
    finally:
        run.run_config = real
    assert sorted(calls) == sorted(c["config_id"] for c in configs[2:])  # 2 resumed, 4 run
    pd.testing.assert_frame_equal(table, full, check_exact=True)
    _assert_complete(out, configs)
    # a damaged (bit-flipped) record is dropped as well
    rec = bytearray(records[0])
    rec[-3] ^= 0xFF
    store.atomic_write(S.arrow_schema().empty_table(), str(out), "parquet")
    with open(str(out) + ".journal", "wb") as f:
        f.write(journal.JOURNAL_MAGIC + bytes(rec) + records[1])
    with open(str(out) + ".journal", "rb") as f:
        assert journal.read_journal(f, "j")[0] == []


def test_resume_skips_finished_and_returns_the_grid_in_order(tmp_path, monkeypatch):
    out = tmp_path / "r.parquet"
    small = dict(depth=[2, 4], width=8, batch=8, activation=["tanh", "relu"])
    vgkern.sweep(**small, out=str(out))
    calls = []
    real = run.run_config
    monkeypatch.setattr(run, "run_config", lambda c: calls.append(c) or real(c))
    bigger = dict(small, depth=[2, 3, 4])
    lines = []
    table = vgkern.sweep(**bigger, out=str(out), log=lines.append)
    assert sorted(c["depth"] for c in calls) == [3, 3]  # only the new depth ran
    assert lines == [f"resuming: 4 of 6 configurations are already finished in {out}; "
                     "running the other 2"]
    want = vgkern.sweep(**bigger)
    pd.testing.assert_frame_equal(table, want, check_exact=True)
    pd.testing.assert_frame_equal(vgkern.read_results(out), want, check_exact=True)
    # a narrower grid returns its own rows; the file keeps everything
    calls.clear()
    narrow = vgkern.sweep(**dict(small, depth=[3]), out=str(out))
    assert calls == [] and set(narrow["depth"]) == {3}
    assert len(vgkern.read_results(out)) == len(want)
    # resume=False starts afresh
    vgkern.sweep(**dict(small, depth=[3]), out=str(out), resume=False)
    assert set(vgkern.read_results(out)["depth"]) == {3}


def test_interrupt_in_process_raises_sweep_interrupted_and_saves(tmp_path, monkeypatch):
    out = tmp_path / "i.parquet"
    grid = dict(depth=[2, 3, 4, 5], width=8, batch=8)
    real = run.run_config
    seen = []

    def flaky(c):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(c)
        return real(c)

    monkeypatch.setattr(run, "run_config", flaky)
    with pytest.raises(vgkern.SweepInterrupted) as info:
        vgkern.sweep(**grid, out=str(out), workers=1)
    stop = info.value
    assert isinstance(stop, KeyboardInterrupt)
    assert (stop.finished, stop.total) == (2, 4)
    assert stop.results["config_id"].nunique() == 2
    assert vgkern.read_results(out)["config_id"].nunique() == 2
    monkeypatch.setattr(run, "run_config", real)
    pd.testing.assert_frame_equal(vgkern.sweep(**grid, out=str(out)), vgkern.sweep(**grid),
                                  check_exact=True)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("where", ["after_journal_write", "before_rebuild", "after_rebuild"])
def test_ctrl_c_inside_saving_a_result_loses_nothing(tmp_path, monkeypatch, where):
    """Ctrl-C raises KeyboardInterrupt wherever the main thread is, also inside the store's
    bookkeeping: right after the third record reached the journal, or just before or after the
    output is rebuilt with it. Every finished configuration is still in the output, once."""
    out = tmp_path / "c.parquet"
    grid = dict(depth=[2, 3, 4, 5], width=8, batch=8)
    calls = []
    if where == "after_journal_write":
        real_write = os.write

        def write(fd, data):
            n = real_write(fd, data)
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".journal"):
                calls.append(fd)
                if len(calls) == 3:
                    raise KeyboardInterrupt
            return n

        monkeypatch.setattr(os, "write", write)
    else:
        real_atomic_write = store.atomic_write

        def atomic_write(table, *args):  # once, on the rebuild that adds the third result
            stop = len(table.column("config_id").unique()) == 3 and not calls
            if stop:
                calls.append(table)
            if not (stop and where == "before_rebuild"):
                real_atomic_write(table, *args)
            if stop:
                raise KeyboardInterrupt

        monkeypatch.setattr(store, "atomic_write", atomic_write)
        monkeypatch.setattr(journal.JournaledOutput, "_flush_every", 0.0)  # a rebuild after every result
    lines = []
    with pytest.raises(vgkern.SweepInterrupted) as info:
        vgkern.sweep(**grid, out=str(out), workers=1, log=lines.append)
    monkeypatch.undo()
    assert (info.value.finished, info.value.total) == (3, 4)
    frame, counts = _finished_ids(out)
    rows = {c["config_id"]: c["steps"] * c["depth"] for c in vgkern.sweep_configs(**grid)}
    assert len(counts) == 3 and all(counts[cid] == rows[cid] for cid in counts.index)
    assert not frame.duplicated(["config_id", "step", "layer"]).any()
    assert not os.path.exists(str(out) + ".journal")
    resumed = vgkern.sweep(**grid, out=str(out), log=lines.append)
    assert lines[-1].startswith("resuming: 3 of 4 configurations")
    pd.testing.assert_frame_equal(resumed, vgkern.sweep(**grid), check_exact=True)


def test_a_failing_configuration_keeps_the_finished_ones(tmp_path, monkeypatch):
    out = tmp_path / "f.parquet"
    real = run.run_config

    def bad(c):
        if c["depth"] == 3:
            raise ValueError("boom")
        return real(c)

    monkeypatch.setattr(run, "run_config", bad)
    with pytest.raises(RuntimeError, match=r"configuration \w+ .*'depth': 3.* failed: ValueError: boom"):
        vgkern.sweep(depth=[5, 3, 2], width=8, batch=8, out=str(out), workers=1)
    # longest first: depth 5 ran and is saved, depth 2 never started
    assert set(vgkern.read_results(out)["depth"]) == {5}


def test_progress_bar_and_process_pool(tmp_path, capsys):
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    grid = dict(depth=[2, 3], width=8, batch=8, seed=[0, 1, 2])
    want = vgkern.sweep(**grid, progress=True)
    err = capsys.readouterr().err
    assert "vgkern sweep" in err and "6/6" in err and "config/s" in err
    assert vgkern.sweep(**grid, progress=None) is not None  # not a terminal: quiet
    assert capsys.readouterr().err == ""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = vgkern.sweep(**grid, executor=pool, out=str(tmp_path / "p.parquet"))
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_second_sweep_on_the_same_output_is_refused(tmp_path):
    pytest.importorskip("fcntl")
    import fcntl

    out = tmp_path / "lock.parquet"
    with open(str(out) + ".journal", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another vgkern sweep is writing"):
            vgkern.sweep(depth=2, width=4, batch=4, out=str(out))
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Bad input: clear errors, before any work starts
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(dept=[2]), r"unknown grid key 'dept' \(did you mean 'depth'\?\)"),
    (dict(activation="sigmiod"), r"unknown value 'sigmiod' \(did you mean 'sigmoid'\?\)"),
    (dict(init="glorot"), r"grid key 'init': unknown value 'glorot'"),
    (dict(model="gru"), r"grid key 'model': unknown value 'gru'"),
    (dict(data="mnist"), r"grid key 'data': unknown value 'mnist'"),
    (dict(dtype="float16"), r"grid key 'dtype': expected 'float32' or 'float64'"),
    (dict(depth=[]), r"grid key 'depth' has no values"),
    (dict(depth=0), r"grid key 'depth': expected an integer >= 1, got 0"),
    (dict(depth=2.5), r"grid key 'depth': expected an integer, got 2.5"),
    (dict(width=True), r"grid key 'width': expected an integer, got True"),
    (dict(seed=-1), r"grid key 'seed': expected an integer >= 0"),
    (dict(batch_norm="yes"), r"grid key 'batch_norm': expected True or False"),
    (dict(lr=float("nan")), r"grid key 'lr': expected a finite number"),
    (dict(sigma_w=1.5), r"sigma_w and sigma_b apply to init 'scaled_normal' only"),
    (dict(init="scaled_normal", sigma_w=0), r"grid key 'sigma_w': expected a number > 0"),
    (dict(model="lstm", batch_norm=True), r"grid key 'batch_norm' applies to model 'mlp' only"),
    (dict(forget_bias=1.0), r"grid key 'forget_bias' applies to model 'lstm' only"),
    (dict(model="rnn", activation="sigmoid"), r"the RNN's activation must be 'tanh' or 'relu'"),
    (dict(batch_norm=True, batch=1), r"batch_norm=True needs batch >= 2"),
    (dict(data="digits", batch=5000), r"batch must be <= 1437"),
    (dict(depth={"a": 1}), r"expected a value or a list of values, got a dict"),
])
def test_bad_grids_fail_clearly(kwargs, message, tmp_path):
    out = tmp_path / "never.parquet"
    with pytest.raises(ValueError, match=message):
        vgkern.sweep(out=str(out), **kwargs)
    assert not out.exists() and not os.path.exists(str(out) + ".journal")


def test_empty_grids_and_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="the grid is empty"):
        vgkern.sweep([])
    with pytest.raises(ValueError, match="given both in the grid and as arguments"):
        vgkern.sweep({"depth": 2}, depth=3)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        vgkern.sweep(depth=2, workers=0)
    with pytest.raises(ValueError, match="executor must be a concurrent.futures.Executor"):
        vgkern.sweep(depth=2, executor=object())


def test_bad_output_paths_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "run_config", lambda c: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"unknown format; the name must end in \.parquet"):
        vgkern.sweep(depth=2, out=str(tmp_path / "r.xlsx"))
    with pytest.raises(ValueError, match="does not exist"):
        vgkern.sweep(depth=2, out=str(tmp_path / "no" / "such" / "r.parquet"))
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        vgkern.sweep(depth=2, out=str(tmp_path / "d.parquet"))
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ValueError, match="not writable"):
            vgkern.sweep(depth=2, out=str(ro / "r.parquet"))
    # an existing file with another schema, or not a Parquet file at all, is left untouched
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"layer": [0, 1], "grad": [1.0, 2.0]}), other)
    before = other.read_bytes()
    with pytest.raises(ValueError, match=r"different schema.*missing columns \['config_id'"):
        vgkern.sweep(depth=2, out=str(other))
    assert other.read_bytes() == before and not os.path.exists(str(other) + ".journal")
    csv = tmp_path / "other.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="different schema"):
        vgkern.sweep(depth=2, out=str(csv))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable PARQUET file"):
        vgkern.sweep(depth=2, out=str(junk))
    # ... unless the user asks to overwrite
    monkeypatch.undo()
    vgkern.sweep(depth=2, width=4, batch=4, out=str(other), resume=False)
    assert len(vgkern.read_results(other)) == 2


def test_import_vgkern_needs_no_optional_dependency():
    code = """
import sys
for name in ("pandas", "pyarrow", "matplotlib", "tqdm", "sklearn", "distributed", "dask"):
    sys.modules[name] = None          # makes `import name` fail
import numpy as np, vgkern
net = vgkern.MLP([4, 4, 4], seed=0)
rep = net.step(np.ones((2, 4), np.float32), np.zeros((2, 4), np.float32))
print(len(vgkern.sweep_configs(depth=[2, 3])))
try:
    vgkern.sweep(depth=2)
except ImportError as err:
    print("ImportError:", err)
try:
    vgkern.plot_sweep(None)
except ImportError as err:
    print("ImportError:", err)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "2"
    assert "pip install 'vgkern[sweep]'" in lines[1] and "pandas" in lines[1]
    assert "matplotlib" in lines[2]


# --------------------------------------------------------------------------------------------
# Results and the seed's claims
# --------------------------------------------------------------------------------------------

def test_summary_gain_is_the_least_squares_slope(serial_table):
    summary = vgkern.sweep_summary(serial_table)
    assert len(summary) == serial_table.groupby(["config_id", "step"]).ngroups
    for _, row in summary.sample(8, random_state=0).iterrows():
        rows = serial_table[(serial_table["config_id"] == row["config_id"])
                            & (serial_table["step"] == row["step"])]
        col = "log10_preact_grad_norm" if row["model"] == "mlp" else "log10_x_grad_norm"
        y = rows[col].to_numpy()
        slope = np.polyfit(rows["layer"].to_numpy(float), y, 1)[0]
        assert row["slope"] == pytest.approx(slope, rel=1e-9, abs=1e-12)
        assert row["gain"] == pytest.approx(10 ** -slope, rel=1e-9)
        assert row["log10_ratio_first_last"] == pytest.approx(y[0] - y[-1], abs=1e-12)
        assert row["gain_stat"] == col


@pytest.fixture(scope="module")
def claims():
    grid = [dict(depth=30, activation=["sigmoid", "tanh", "relu", "elu"], init="xavier_normal",
                 batch_norm=[False, True], seed=[0, 1, 2]),
            dict(depth=30, activation="relu", init="he_normal", seed=[0, 1, 2, 3, 4])]
    return vgkern.sweep_summary(vgkern.sweep(grid))


def test_claim_sigmoid_vanishes_far_more_than_tanh_relu_elu_at_depth_30(claims):
    s = claims[(claims["init"] == "xavier_normal") & ~claims["batch_norm"]]
    ratio = s.groupby("activation")["log10_ratio_first_last"]
    worst_sigmoid = ratio.max()["sigmoid"]  # the sigmoid seed that vanishes least
    for act in ("tanh", "relu", "elu"):
        # input-layer vs output-layer gradient: > 10 orders of magnitude further apart for sigmoid
        assert worst_sigmoid < ratio.min()[act] - 10, (act, ratio.describe())
    assert worst_sigmoid < -15


def test_claim_relu_with_he_init_keeps_the_gain_within_a_few_percent_of_1(claims):
    he = claims[claims["init"] == "he_normal"]
    assert len(he) == 5
    assert (abs(he["gain"] - 1) < 0.05).all(), he["gain"].tolist()
    assert abs(he["gain"].mean() - 1) < 0.03
    xavier_relu = claims[(claims["init"] == "xavier_normal") & (claims["activation"] == "relu")
                         & ~claims["batch_norm"]]
    assert (xavier_relu["gain"] < 0.8).all()  # Glorot halves the ReLU signal: clearly not 1


def test_claim_batch_norm_changes_the_sigmoid_gain(claims):
    sig = claims[claims["activation"] == "sigmoid"].groupby("batch_norm")["gain"]
    plain, with_bn = sig.mean()[False], sig.mean()[True]
    assert plain < 0.3 and with_bn > 0.9  # ~0.23 vs ~1.0
    assert sig.max()[False] < sig.min()[True]


# --------------------------------------------------------------------------------------------
# CLI and plots
# --------------------------------------------------------------------------------------------

def assert_png(path, min_bytes=20_000, min_colored=0.01):
    import matplotlib.image as mpimg

    assert os.path.isfile(path), path
    assert os.path.getsize(path) > min_bytes
    img = mpimg.imread(path)
    rgb = img[..., :3]
    assert rgb.shape[0] > 300 and rgb.shape[1] > 400
    non_white = (rgb < 0.95).any(axis=-1).mean()
    assert non_white > 0.03, non_white  # axes, lines and heatmaps, not a blank page
    colored = (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.2).mean()
    assert colored > min_colored, colored  # coloured lines / heatmap cells


def test_cli_sweep_writes_parquet_csv_and_prints_a_summary(tmp_path, capsys):
    pq_out, csv_out, summ = tmp_path / "r.parquet", tmp_path / "r.csv", tmp_path / "s.csv"
    args = ["sweep", "--depth", "2..6:2", "--activation", "sigmoid", "relu", "--batch-norm",
            "both", "--width", "8", "--batch", "16", "--seed", "0,1", "--init", "scaled_normal",
            "--sigma-w", "1.5", "--sigma-b", "0.05", "--no-progress"]
    assert cli.main(args + ["--out", str(pq_out), "--summary", str(summ)]) == 0
    out = capsys.readouterr().out
    assert "gain/layer" in out and "sigmoid" in out and "24 configurations" in out
    assert cli.main(args + ["--out", str(csv_out)]) == 0
    a, b = vgkern.read_results(pq_out), vgkern.read_results(csv_out)
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # CSV round-trips exactly
    want = vgkern.sweep(depth=[2, 4, 6], activation=["sigmoid", "relu"],
                        batch_norm=[False, True], width=8, batch=16, seed=[0, 1],
                        init="scaled_normal", sigma_w=1.5, sigma_b=0.05)
    pd.testing.assert_frame_equal(a, want, check_exact=True)
    summary = pd.read_csv(summ)
    assert len(summary) == 24 and {"gain", "slope", "ratio_first_last"} <= set(summary.columns)
    # the same command again resumes: nothing to do
    assert cli.main(args + ["--out", str(pq_out)]) == 0
    assert "resuming: 24 of 24" in capsys.readouterr().err
    # dry run
    assert cli.main(args + ["--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("24 configurations")


def test_cli_sweep_errors_are_clear(tmp_path, capsys):
    def err(*args):
        rc = cli.main(["sweep", *args])
        assert rc == 2
        return capsys.readouterr().err

    assert "unknown value 'swish'" in err("--activation", "swish", "--out", str(tmp_path / "a.parquet"))
    assert "--out is required" in err("--depth", "2")
    assert "does not exist" in err("--depth", "2", "--out", str(tmp_path / "x" / "a.parquet"))
    assert "bad range" in err("--depth", "5..2", "--out", str(tmp_path / "a.parquet"))
    assert "expected on/off" in err("--batch-norm", "maybe", "--out", str(tmp_path / "a.parquet"))
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    assert "different schema" in err("--depth", "2", "--out", str(tmp_path / "other.csv"))
    with pytest.raises(SystemExit):  # no silent abbreviations: --dept is not --depth
        cli.main(["sweep", "--dept", "3", "--out", str(tmp_path / "a.parquet")])
    assert "unrecognized arguments: --dept" in capsys.readouterr().err


def test_cli_plot_and_summary(tmp_path, capsys):
    res = tmp_path / "r.parquet"
    vgkern.sweep([dict(depth=[2, 4, 8], activation=["sigmoid", "tanh"], batch_norm=[False, True],
                       width=16, batch=32, seed=[0, 1]),
                  dict(model=["lstm", "rnn"], seq_len=[4, 8], width=16, batch=32)], out=str(res))
    fig = tmp_path / "fig.png"
    assert cli.main(["plot", str(res), "-o", str(fig)]) == 0
    assert_png(fig)
    fig2 = tmp_path / "fig2.png"
    assert cli.main(["plot", str(res), "-o", str(fig2), "--depth", "4", "--where",
                     "batch_norm=off", "activation=sigmoid,tanh"]) == 0
    assert_png(fig2)
    capsys.readouterr()
    assert cli.main(["summary", str(res), "-o", str(tmp_path / "s.parquet")]) == 0
    assert "gain/layer" in capsys.readouterr().out
    assert cli.main(["plot", str(res), "-o", str(fig), "--depth", "5"]) == 2
    assert "no mlp rows with depth=5; depths in the table: [2, 4, 8]" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "missing.parquet"), "-o", str(fig)]) == 2


def test_plot_functions_return_figures(serial_table, tmp_path):
    from matplotlib.figure import Figure

    f1 = vgkern.plot_gradient_norms(serial_table, depth=3, where={"data": "gaussian"})
    f2 = vgkern.plot_gradient_heatmap(serial_table, where={"data": "gaussian", "seed": 0})
    f3 = vgkern.plot_gain_vs_depth(vgkern.sweep_summary(serial_table))
    f4 = vgkern.plot_gradient_norms(serial_table, model="recurrent", step=1)
    for i, f in enumerate((f1, f2, f3, f4)):
        assert isinstance(f, Figure)
        f.savefig(tmp_path / f"f{i}.png", dpi=100)
        assert_png(tmp_path / f"f{i}.png", min_bytes=10_000, min_colored=0.002)
    with pytest.raises(ValueError, match="no rows with step=7"):
        vgkern.plot_gradient_norms(serial_table, step=7)
    with pytest.raises(ValueError, match="where: no column 'colour'"):
        vgkern.plot_gradient_norms(serial_table, where={"colour": "red"})


def test_cli_demo_is_a_small_sweep_with_a_summary_and_a_png(tmp_path):
    png = tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "-m", "vgkern.cli", "demo", "-o", str(png),
                           "--out", str(tmp_path / "demo.parquet")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "vgkern demo: 100 configurations" in out
    for word in ("sigmoid+BN", "tanh", "relu", "elu", "LSTM", "RNN tanh", f"wrote {png}"):
        assert word in out, word
    assert_png(png)
    table = vgkern.read_results(tmp_path / "demo.parquet")
    assert set(table["model"]) == {"mlp", "lstm", "rnn"}
    assert sorted(table.loc[table["model"] == "mlp", "depth"].unique()) == list(range(5, 51, 5))


def test_cli_demo_without_matplotlib_prints_the_tables_and_says_how_to_get_the_figure(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # makes `import matplotlib` fail
            "from vgkern import cli\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "demo", "--depth", "2,3", "--width", "8",
                           "--batch", "8", "--out", "demo.csv"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    for word in ("vgkern demo: 20 configurations", "Gradient gain per layer", "sigmoid+BN",
                 "Through time", "RNN tanh"):
        assert word in out, word
    lines = [line for line in out.splitlines() if "matplotlib" in line]
    assert lines == ["no figure: vgkern-demo.png needs matplotlib: pip install 'vgkern[sweep]' "
                     "(wrote demo.csv)"]
    assert not (tmp_path / "vgkern-demo.png").exists()
    rows = 4 * 2 * (2 + 3) + 2 * (2 + 3)  # MLPs: 4 activations x BN off/on; LSTM and RNN
    assert len(vgkern.read_results(tmp_path / "demo.csv")) == rows


# --------------------------------------------------------------------------------------------
# Durability of the output and identity of configurations
# --------------------------------------------------------------------------------------------

def _record_fsyncs_and_replaces(monkeypatch):
    """Patch os.fsync and os.replace to log ("fsync", (device, inode)) and ("replace", (device,
    inode) of the source, destination path), in call order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", (st.st_dev, st.st_ino)))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        st = os.stat(src)
        events.append(("replace", (st.st_dev, st.st_ino), os.path.abspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _assert_each_replace_follows_an_fsync_of_its_file(events, path):
    replaces = [i for i, e in enumerate(events) if e[0] == "replace"]
    assert replaces and all(events[i][2] == os.path.abspath(path) for i in replaces)
    start = 0
    for i in replaces:  # the temporary file's data reached the disk before it became the output
        assert ("fsync", events[i][1]) in events[start:i], events[start:i + 1]
        start = i + 1
    folder = os.stat(os.path.dirname(os.path.abspath(path)))
    assert ("fsync", (folder.st_dev, folder.st_ino)) in events[replaces[-1] + 1:]  # the rename


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_atomic_write_fsyncs_the_temporary_file_before_replacing_the_output(tmp_path, suffix,
                                                                           monkeypatch):
    out = tmp_path / f"r.{suffix}"
    table = vgkern.sweeps.store.arrow_table([(c, run.run_config(c))
                                             for c in vgkern.sweep_configs(depth=2, width=4,
                                                                           batch=4)])
    events = _record_fsyncs_and_replaces(monkeypatch)
    store.atomic_write(table, str(out), suffix)
    monkeypatch.undo()
    _assert_each_replace_follows_an_fsync_of_its_file(events, out)
    assert vgkern.read_results(out).equals(store.to_pandas(table))
    # and every rebuild of a sweep's output goes through such a write
    events = _record_fsyncs_and_replaces(monkeypatch)
    vgkern.sweep(depth=[2, 3, 4], width=4, batch=4, out=str(out), flush_interval=0, workers=1,
                 resume=False)
    monkeypatch.undo()
    assert sum(e[0] == "replace" for e in events) >= 2  # the first write, the end (and rebuilds)
    _assert_each_replace_follows_an_fsync_of_its_file(events, out)


# One grid per key whose two configurations differ in that key only (the model and seq_len:
# in what follows from them).
ONE_KEY_APART = {
    "model": dict(model=["mlp", "lstm"]),
    "data": dict(data=["gaussian", "digits"], depth=8, width=4, batch=4),
    "depth": dict(depth=[2, 3]),
    "seq_len": dict(model="lstm", seq_len=[3, 4]),
    "width": dict(width=[4, 8]),
    "activation": dict(activation=["tanh", "relu"]),
    "init": dict(init=["xavier_normal", "he_normal"]),
    "sigma_w": dict(init="scaled_normal", sigma_w=[1.0, 1.5]),
    "sigma_b": dict(init="scaled_normal", sigma_b=[0.0, 0.1]),
    "batch_norm": dict(batch_norm=[False, True]),
    "batch": dict(batch=[4, 8]),
    "dtype": dict(dtype=["float32", "float64"]),
    "seed": dict(seed=[0, 1]),
    "steps": dict(steps=[1, 2]),
    "lr": dict(lr=[0.01, 0.02]),
    "optimizer": dict(optimizer=["sgd", "adam"]),
    "momentum": dict(optimizer="momentum", momentum=[0.5, 0.9]),
    "weight_decay": dict(weight_decay=[0.0, 0.01]),
    "eval_every": dict(data="digits", eval_every=[0, 5], depth=3, width=4, batch=4),
    "log_scale": dict(log_scale=[False, True]),
    "forget_bias": dict(model="lstm", forget_bias=[0.0, 1.0]),
}


def test_config_id_changes_with_every_grid_key():
    assert set(ONE_KEY_APART) == set(S.GRID_KEYS)  # a new grid key needs its line here
    for key, grid in ONE_KEY_APART.items():
        a, b = vgkern.sweep_configs(**grid)  # exactly two: different ids, no duplicate dropped
        assert a["config_id"] != b["config_id"], key
        assert a["config_id"] == S.config_id(a) and b["config_id"] == S.config_id(b)
        if key not in ("model", "seq_len"):
            nan = lambda v: isinstance(v, float) and math.isnan(v)
            apart = [k for k in S.CONFIG_COLUMNS if not (a[k] == b[k] or nan(a[k]) and nan(b[k]))]
            assert apart == [key], (key, apart)


def test_configurations_that_differ_only_in_lr_are_kept_apart(tmp_path):
    out = tmp_path / "lr.parquet"
    grid = dict(depth=3, width=8, batch=8, steps=2, lr=[0.01, 0.5])
    table = vgkern.sweep(**grid, out=str(out))
    assert table["config_id"].nunique() == 2
    second = table[table["step"] == 1].groupby("lr")["loss"].first()
    assert second[0.01] != second[0.5]  # the rows really differ: lr matters
    pd.testing.assert_frame_equal(vgkern.read_results(out), table, check_exact=True)
    # resuming a grid with a third lr runs only that one
    lines = []
    vgkern.sweep(**dict(grid, lr=[0.01, 0.5, 0.1]), out=str(out), log=lines.append)
    assert lines == [f"resuming: 2 of 3 configurations are already finished in {out}; "
                     "running the other 1"]


# --------------------------------------------------------------------------------------------
# The grid keys' table: one home for the keys, their defaults, checks and help
# --------------------------------------------------------------------------------------------

def test_docs_defaults_and_cli_options_come_from_the_keys_table(capsys):
    keys = S.KEYS
    assert tuple(S.DEFAULTS) == tuple(keys) and set(S.GRID_KEYS) == set(keys)
    assert S.CONFIG_COLUMNS == tuple(k for k in keys if keys[k].column)
    for name, key in keys.items():
        assert f"    {name:<12} {key.describe()}" in S.__doc__
        assert S.DEFAULTS[name] == key.default
        if key.default is not None:
            assert S.spec.normalize(name, key.default) == key.default  # defaults are valid
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    squeeze = lambda text: "".join(text.split())  # argparse wraps lines, also at hyphens
    help_text = squeeze(capsys.readouterr().out)
    for name, key in keys.items():
        option = f"--{name.replace('_', '-')} V [V ...] {key.describe(cli=True)}"
        assert squeeze(option) in help_text, option
    # the statistic columns are the report fields (which come from _core)
    # ... and the held-out metrics (eval_every) last
    assert S.STAT_COLUMNS[0] == "loss"
    assert S.STAT_COLUMNS[-2:] == S.spec.TEST_STATS == ("test_loss", "test_accuracy")
    assert set(S.STAT_COLUMNS[1:-2]) == (set(vgkern.GradReport.fields)
                                       | set(vgkern.SequenceReport.fields)) - {"loss"}
