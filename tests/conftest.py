from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from sidecar import logs
from sidecar.testing.echo import EchoBackend

from .support.env import Pki


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on both loops: the stdlib one and uvloop (what `sidecar run` uses)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def backend() -> AsyncIterator[EchoBackend]:
    echo = EchoBackend()
    await echo.start()
    yield echo
    await echo.stop()


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if fields:
            self.events.append({**fields, "level": record.levelname.lower()})

    def of(self, name: str) -> list[dict[str, object]]:
        return [event for event in self.events if event.get("event") == name]


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    logs.configure("json", "debug")
    capture = LogCapture()
    logs.LOGGER.addHandler(capture)
    yield capture
    logs.LOGGER.removeHandler(capture)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
