"""The suite's timeout configuration ends a hung test, however it hangs, and never holds
the run (pyproject.toml, ``[tool.pytest.ini_options]``).

Each check runs an inner pytest session with the repository's own options, the times
scaled down (``timeout`` 1 s, ``faulthandler_timeout`` 4 s), on a test whose async fixture
never finishes its teardown:

* idle: the teardown awaits something that never comes and the event loop idles in
  ``select``. pytest-timeout's signal method raises there: the test fails with its stack
  and the session goes on to the next test (the thread method would end the session);
* stubborn: the teardown awaits a task that swallows every cancellation (as a pub/sub
  reader did: stomprelay.bounded). The signal method's failure ends the fixture, then the
  event loop's own close waits for the task again, with no timeout left; faulthandler ends
  the session there, every thread's stack dumped;
* busy: a task keeps the loop busy and never yields, so the signal always lands inside it,
  which keeps the exception as its result; the hang goes on until faulthandler ends the
  session. (Tasks that yield between their sleeps let the signal land in the loop's own
  code now and then: the test then fails at its timeout and the session goes on, a good
  outcome but not this case, and the check flaked.)

Without the configuration each inner session would hang; the check fails when its inner
session outlives ``INNER_LIMIT``.
"""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
#: The inner sessions' timeouts: pytest-timeout's, and faulthandler's exit.
TIMEOUT = 1
LAST_RESORT = 4
#: Longer than any inner session should take; past it the check fails.
INNER_LIMIT = 60

HUNG_TESTS = """
import asyncio
import time

import pytest


@pytest.fixture
async def idle():
    yield
    await asyncio.Event().wait()


async def test_idle(idle):
    pass


@pytest.fixture
async def stubborn():
    async def reader():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(reader())
    yield
    await task


async def test_stubborn(stubborn):
    pass


async def test_busy():
    async def spin():
        while True:
            time.sleep(0.002)

    task = asyncio.create_task(spin())
    await asyncio.Event().wait()


def test_after():
    pass
"""


def suite_options() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        options: dict[str, Any] = tomllib.load(file)["tool"]["pytest"]["ini_options"]
    return options


def inner_pyproject() -> str:
    """The suite's options, times scaled down, for the inner session."""
    options = dict(suite_options())
    options.pop("testpaths", None)
    if "timeout" in options:
        options["timeout"] = TIMEOUT
    if "faulthandler_timeout" in options:
        options["faulthandler_timeout"] = LAST_RESORT
    lines = ["[tool.pytest.ini_options]"]
    for name, value in options.items():
        if isinstance(value, bool):
            lines.append(f"{name} = {str(value).lower()}")
        elif isinstance(value, (int, float)):
            lines.append(f"{name} = {value}")
        elif isinstance(value, str):
            lines.append(f"{name} = {value!r}")
        else:
            lines.append(f"{name} = {list(value)!r}")
    return "\n".join(lines) + "\n"


def run_inner(pytester: pytest.Pytester, *names: str) -> tuple[pytest.RunResult, float]:
    pytester.makepyprojecttoml(inner_pyproject())
    pytester.makepyfile(test_hung=HUNG_TESTS)
    began = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", "-k", " or ".join(names), timeout=INNER_LIMIT
    )
    return result, time.monotonic() - began


def test_a_teardown_hung_on_an_idle_loop_fails_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    result, _ = run_inner(pytester, "test_idle", "test_after")
    output = result.stdout.str()
    result.assert_outcomes(passed=2, errors=1)
    assert "Failed: Timeout" in output
    assert re.search(r"test_idle.*ERROR", output), output
    assert re.search(r"test_after PASSED", output), "the session did not go on"
    # the stack of the hung teardown is in the report
    assert "in select" in output or "selectors.py" in output, output


@pytest.mark.parametrize("name", ["test_stubborn", "test_busy"])
def test_a_test_that_stays_hung_ends_the_run_with_every_threads_stack(
    pytester: pytest.Pytester, name: str
) -> None:
    result, took = run_inner(pytester, name, "test_after")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert took < LAST_RESORT + 30, f"the inner session took {took:.1f} s"
    assert f"Timeout (0:00:0{LAST_RESORT})!" in output, output
    # faulthandler's dump: every thread, the main one included, most recent call first
    assert "Thread 0x" in output
    assert "most recent call first" in output
    assert "pytest_runtest_protocol" in output, "the main thread's stack is missing"


def test_faulthandler_comes_after_every_tests_timeout() -> None:
    """faulthandler ends the whole run: a test allowed more than its time (a timeout
    marker) would be ended there instead of failing on its own."""
    options = suite_options()
    last = float(options["faulthandler_timeout"])
    assert options.get("faulthandler_exit_on_timeout") is True
    assert options.get("timeout_method") == "signal"
    assert float(options["timeout"]) < last
    markers = [
        (path.relative_to(ROOT), float(seconds))
        for path in (ROOT / "tests").rglob("*.py")
        for seconds in re.findall(r"mark\.timeout\(\s*([\d.]+)", path.read_text())
    ]
    assert [m for m in markers if m[1] >= last] == [], f"timeouts past {last} s"
