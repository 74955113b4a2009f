"""A stop signal that comes while the demo starts a child waits until the child is on the
list of those to stop, then stops the demo as it would have."""

from __future__ import annotations

import os
import signal

import pytest

from gateway.demo.topology import stop_signals_deferred


def _start_a_child(done: list[str]) -> None:
    with stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("registered")  # what a Ctrl-C must not cut short


def test_ctrl_c_inside_the_block_is_delivered_after_it() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _start_a_child(done)
    assert done == ["registered"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_goes_to_the_handler_in_place_and_the_handlers_come_back() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        with stop_signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []
        assert seen == [signal.SIGTERM]  # once: the first of those that came
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_no_signal_no_interruption() -> None:
    with stop_signals_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
