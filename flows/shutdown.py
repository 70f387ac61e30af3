"""Clean exits for the CLI: SIGTERM/SIGINT handling, and one clear line for errors that stop a run.

SIGTERM (what ``timeout``, Kubernetes and schedulers send) used to kill the process outright:
the temporary Prefect server it had started (a subprocess) was orphaned and ``parts/`` stayed
behind. Here the first SIGTERM/SIGINT raises KeyboardInterrupt in the main thread (Prefect
marks the flow run crashed on the way out); the CLI then stops the temporary server, removes
this run's ``parts/``, and exits with 128 + the signal number without waiting for chunks still
computing in worker threads. A second signal, or a main thread that does not unwind within
``GRACE_S`` seconds, exits at once after the same clean-up.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["install_signal_handlers", "shutdown", "received_signal", "quiet_expected_errors", "GRACE_S"]

GRACE_S = 10.0
_received: list[int] = []


def received_signal() -> int | None:
    """The first SIGTERM/SIGINT this process received, if any."""
    return _received[0] if _received else None


def _cleanup() -> None:
    """Stop temporary Prefect servers this process started; drop this run's lock and parts."""
    try:
        from auditors.audit.stale import release_all

        release_all(remove_parts=True)
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass
    try:
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
    except Exception:  # noqa: BLE001
        pass


def shutdown(signum: int | None) -> int:
    """Clean up and leave now (no waiting for worker threads): exit status 128 + signum.

    Without a received signal (a KeyboardInterrupt raised by other code) it cleans up and
    returns 130 instead of exiting, so an embedding process is not killed.
    """
    if signum is None:
        _cleanup()
        print("camaudit: interrupted", file=sys.stderr)
        return 130
    _cleanup()
    name = signal.Signals(signum).name
    print(f"camaudit: stopped by {name}; the temporary Prefect server was shut down, this run's partial outputs removed",
          file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _received:  # second signal: no more patience
        shutdown(_received[0])
    _received.append(signum)
    timer = threading.Timer(GRACE_S, shutdown, args=(signum,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_signal_handlers() -> Callable[[], None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt once (main thread only). Returns an undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def undo() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo


class _ExpectedErrorFilter(logging.Filter):
    """Drop Prefect's console records (tracebacks) about camaudit's own expected errors.

    A ConfigError inside a task is a message for the user, not a crash: the CLI prints it once.
    Prefect still sends the full records to its API log (``prefect flow-run logs``); ``--debug``
    keeps them on the console too.
    """

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        from auditors.errors import CamAuditError

        if record.exc_info and isinstance(record.exc_info[1], CamAuditError):
            return False
        if record.levelno >= logging.ERROR and record.name.startswith("prefect"):
            msg = record.getMessage()
            if any(f"{n}(" in msg or f"{n}:" in msg for n in self.names):
                return False
        return True


def quiet_expected_errors() -> Callable[[], None]:
    """Install the filter on the console handlers of Prefect's loggers and the root logger."""
    from prefect.logging.configuration import ensure_logging_setup

    from auditors.errors import CamAuditError

    ensure_logging_setup()  # Prefect adds its handlers lazily; add ours to them now

    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for c in cls.__subclasses__() for s in subclasses(c)]

    flt = _ExpectedErrorFilter(tuple(sorted({c.__name__ for c in subclasses(CamAuditError)})))
    loggers = [logging.getLogger()] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("prefect")
    ]
    handlers = [h for lg in loggers for h in lg.handlers if type(h).__name__ != "APILogHandler"]  # API log keeps all
    for handler in handlers:
        handler.addFilter(flt)
    return lambda: [h.removeFilter(flt) for h in handlers] and None
