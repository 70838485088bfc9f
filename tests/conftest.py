import os
import time

import pytest

pytest_plugins = ["lab.pytest_plugin"]


def pytest_configure(config: pytest.Config) -> None:
    """Each test process (and xdist worker) chooses the engine build first, so a stale build is
    reported once here and the toelab commands the tests start inherit the quiet (native.NOTED_ENV)."""
    from toe_engine import native

    native.activate()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true",
                     help="also run the tests marked long (scenarios that wait out an RFC timer of minutes)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long` run only with --long: minutes each by design, they stay out of ./run test."""
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="a long run (an RFC timer of minutes waited out): give pytest --long")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    """Which engine build the run tests: compiled (toe_engine/native.py) or pure Python."""
    from toe_engine import native

    choice = native.activate()
    return f"toelab engine build: {choice.build} ({choice.reason})"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The report covers results since now, or since TOELAB_SUITE_STARTED when `./run test` runs the suite in parts."""
    session.config.stash[STARTED] = float(os.environ.get("TOELAB_SUITE_STARTED") or time.time())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Once per run (the xdist controller, not each worker): the scenarios' HTML report, if any ran."""
    if hasattr(session.config, "workerinput"):
        return
    from scenarios.suite_report import write_suite_report

    written = write_suite_report(since=session.config.stash.get(STARTED, time.time()))
    if written is not None:
        session.config.get_terminal_writer().line(f"scenario report: {written}")


STARTED = pytest.StashKey[float]()
