"""The fit loop: the documented minimal task runs, resume is exact, Ctrl-C keeps the work,
checkpoints load with weights_only and back into fs.Siren, and the settings behave."""

from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass

import pytest
import torch

import fastsiren as fs
from fastsiren.errors import InputError
from fastsiren.fit import FitInterrupted, load_checkpoint
from fastsiren.tasks import FitSettings, Task, setting

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _docstring_example() -> dict:
    """The minimal task of fastsiren/tasks/base.py's docstring, executed as written there (so the
    documentation cannot drift from what the loop accepts)."""
    import textwrap

    import fastsiren.tasks.base as base

    code = textwrap.dedent(base.__doc__.split("A minimal task, complete")[1].split("::\n", 1)[1])
    namespace = {"dataclass": dataclass, "math": math, "torch": torch,
                 "FitSettings": FitSettings, "Task": Task, "setting": setting}
    exec(compile(code, base.__file__, "exec"), namespace)
    return namespace


_EXAMPLE = _docstring_example()
ToneSettings, ToneTask = _EXAMPLE["ToneSettings"], _EXAMPLE["ToneTask"]


class NoisyToneTask(ToneTask):
    """Samples a random half of the points each step (exercises the sampling generator) and
    raises SIGINT, as Ctrl-C would, while sampling step ``interrupt_at``."""

    interrupt_at: int | None = None

    def sample(self, step, generator):
        if step == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
        pick = torch.randperm(512, generator=generator)[:256]
        return {k: v[pick] for k, v in self.batch.items()}


TINY = {"width": 16, "depth": 1, "lr": 1e-3, "device": "cpu", "log_every": 2}


def test_minimal_task_fits_and_writes_the_run_folder(tmp_path):
    result = fs.fit(ToneTask, out=tmp_path, steps=40, progress=False, **TINY)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["final_logged_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["metrics"]["mse"] == pytest.approx(result.metrics["metrics"]["mse"])
    assert summary["steps"] == 40 and summary["backend"] == "torch"
    assert summary["settings"]["cycles"] == 5.0 and summary["points_per_second"] > 0
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [*range(0, 40, 2), 39]
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "settings.json").read_text())["steps"] == 40


def test_checkpoint_loads_weights_only_and_as_a_siren(tmp_path):
    result = fs.fit(ToneTask, out=tmp_path, steps=3, progress=False, **TINY)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["task"] == "tone"
    model = fs.load_model(tmp_path)
    assert isinstance(model, fs.Siren)
    x = torch.linspace(-3, 3, 50)[:, None]  # anywhere, not only on the training points
    torch.testing.assert_close(model(x), result.model(x), rtol=0, atol=0)


def _weights(out_dir):
    return load_checkpoint(out_dir)["model"]


def test_resume_reaches_the_uninterrupted_weights(tmp_path):
    fs.fit(NoisyToneTask, out=tmp_path / "straight", steps=6, progress=False, **TINY)
    fs.fit(NoisyToneTask, out=tmp_path / "resumed", steps=3, progress=False, **TINY)
    fs.fit(NoisyToneTask, out=tmp_path / "resumed", resume=True, steps=6, progress=False)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for key in straight:  # same operations in the same order on the CPU: bit for bit
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    logs = [(tmp_path / d / "log.jsonl").read_text().splitlines() for d in ("straight",
                                                                           "resumed")]
    strip = [[{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in log]
             for log in logs]
    assert strip[0] == strip[1]


def test_ctrl_c_checkpoints_and_resume_continues_exactly(tmp_path, monkeypatch):
    fs.fit(NoisyToneTask, out=tmp_path / "straight", steps=6, progress=False, **TINY)
    monkeypatch.setattr(NoisyToneTask, "interrupt_at", 2)
    # A process started in the background inherits SIGINT ignored: whatever the handler is,
    # the fit must take Ctrl-C for itself and put that handler back afterwards.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(FitInterrupted, match="interrupted by SIGINT at step 3/6"):
        fs.fit(NoisyToneTask, out=tmp_path / "stopped", steps=6, progress=False, **TINY)
    assert load_checkpoint(tmp_path / "stopped")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    monkeypatch.setattr(NoisyToneTask, "interrupt_at", None)
    fs.fit(NoisyToneTask, out=tmp_path / "stopped", resume=True, progress=False)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "stopped")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_resume_refuses_other_settings_and_missing_checkpoints(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        fs.fit(ToneTask, out=tmp_path, resume=True)
    fs.fit(ToneTask, out=tmp_path, steps=2, progress=False, **TINY)
    with pytest.raises(InputError, match="--width differs"):
        fs.fit(ToneTask, out=tmp_path, resume=True, width=32)


def test_settings_defaults_depend_on_the_device_and_are_checked():
    settings = ToneSettings()
    assert settings.steps is None
    assert settings.resolved(torch.device("cpu")).steps == 200
    assert settings.resolved(torch.device("cuda")).steps == 1000
    for bad, message in [({"lr": -1.0}, "--lr: expected a value > 0"),
                         ({"depth": -1}, "--depth: expected a value >= 0"),
                         ({"lr": math.nan}, "--lr: expected a finite number"),
                         ({"device": "tpu"}, "--device: expected one of")]:
        with pytest.raises(InputError, match=bad and message):
            ToneSettings(**bad).validate()
    with pytest.raises(InputError, match="unknown setting"):
        fs.fit(ToneTask, stpes=3)


def test_a_new_run_never_replaces_an_existing_one_by_accident(tmp_path):
    fs.fit(ToneTask, out=tmp_path, steps=2, progress=False, **TINY)
    before = _weights(tmp_path)
    with pytest.raises(InputError, match="already holds a run.*--resume.*--overwrite"):
        fs.fit(ToneTask, out=tmp_path, steps=2, seed=1, progress=False, **TINY)
    for key, value in _weights(tmp_path).items():  # nothing written
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    fs.fit(ToneTask, out=tmp_path, steps=2, seed=1, overwrite=True, progress=False, **TINY)
    assert load_checkpoint(tmp_path)["step"] == 2


@pytest.mark.slow  # the chunk graphs compile: ten seconds or so
def test_compiled_chunks_fit_matches_the_eager_fit(tmp_path):
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    eager = fs.fit(ToneTask, out=tmp_path / "eager", steps=3, progress=False, **TINY)
    assert counters["stats"]["unique_graphs"] == 0
    compiled = fs.fit(ToneTask, out=tmp_path / "compiled", steps=3, progress=False,
                      compile_chunks=True, **TINY)
    assert compiled.model.compile_chunks is True
    assert counters["stats"]["unique_graphs"] >= 2  # the forward and the backward chunk
    # The same steps in float32 with the elementwise work fused and reordered: rounding apart.
    for (name, a), b in zip(compiled.model.state_dict().items(), eager.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


class GlobalBatchToneTask(ToneTask):
    """Batches of 8 independent items along dim 0 that the loop may split over processes."""

    batch_items = 8


def test_a_global_batch_is_split_by_the_loop_not_the_task():
    from fastsiren.fit import distributed
    from fastsiren.tasks import FitContext

    settings = ToneSettings(device="cpu").resolved(torch.device("cpu"))
    task = GlobalBatchToneTask(settings, FitContext(torch.device("cpu")))
    batch = {"coords": torch.arange(8.0)[:, None], "target": torch.arange(8.0)[:, None]}
    for rank in range(2):
        place = FitContext(torch.device("cpu"), rank=rank, world_size=2)
        share = distributed.share_of_batch(batch, task, place)
        assert share["coords"][:, 0].tolist() == [rank, rank + 2, rank + 4, rank + 6]
    alone = distributed.share_of_batch(batch, task, FitContext(torch.device("cpu")))
    assert alone is batch
    distributed.check_batch_items(task, FitContext(torch.device("cpu"), rank=0, world_size=4))
    with pytest.raises(InputError, match="multiple of the 3 processes"):
        distributed.check_batch_items(task, FitContext(torch.device("cpu"), rank=0,
                                                       world_size=3))


def test_type_check_reads_tuple_items_as_items_not_as_the_value():
    """A ``tuple[int, int]`` setting holds a tuple; only a union lists the value's alternatives."""
    from fastsiren.errors import InputError
    from fastsiren.tasks.base import _check_type

    _check_type("--size", (16, 16), tuple[int, int])
    _check_type("--steps", 3, int | None)
    with pytest.raises(InputError, match="expected an integer"):
        _check_type("--steps", "3", int | None)
