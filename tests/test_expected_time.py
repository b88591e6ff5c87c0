"""The expected-time line a long fit prints before most of it has run."""

from fastsiren.fit.report import ExpectedTime, format_duration


def test_said_once_from_the_median_of_the_timed_steps():
    said = []
    expected = ExpectedTime("image", steps_to_go=1000, say=said.append)
    expected.step_done(5.0)  # the first step (warm-up) is not a sample of the rest
    for seconds in (0.2, 0.3, 9.0, 0.3, 0.3, 0.3, 0.3, 0.3):
        expected.step_done(seconds)
    assert len(said) == 1
    # said after steps 2..4 (3 steps, 9.5 s >= 2 s): the median 0.3 s, not the 9 s outlier;
    # 5 + 9.5 s done and 996 steps of 0.3 s to go: 313.3 s
    assert said[0].startswith("fit image: expected 5.2 min for 1000 steps (0.3 s per step")
    assert "steps 2 to 4" in said[0]


def test_quiet_for_a_short_fit_or_without_a_bar():
    said = []
    short = ExpectedTime("image", steps_to_go=30, say=said.append)
    for _ in range(30):
        short.step_done(0.5)  # 15 s in all: under 20 s, nothing to announce
    assert said == []
    silent = ExpectedTime("image", steps_to_go=1000, say=None)
    for _ in range(30):
        silent.step_done(1.0)
    assert said == []


def test_format_duration():
    assert [format_duration(s) for s in (45, 210, 7200)] == ["45 s", "3.5 min", "2.0 h"]
