"""Ctrl-C and SIGTERM never land inside an SSH send (ferry.host.transport.interrupts): a
signal arriving there is raised when the send is done, one arriving elsewhere at once.
An interrupt inside paramiko's ``_send_user_message`` had left its lock held and a
deploy hung forever on its audit line (seen in CI: test_interruptions after-render-TERM)."""

import os
import signal
import threading
import time

import pytest

from ferry.cli import Terminated, user_errors
from ferry.host.transport import interrupts


def test_an_interrupt_inside_a_send_is_raised_when_the_send_is_done():
    steps = []

    @user_errors
    def command():
        with pytest.raises(Terminated):
            with interrupts.sending():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)                      # the handler has run: nothing raised yet
                steps.append("send finished")
                with interrupts.sending():             # nested: still the same send
                    steps.append("inner")
            steps.append("not reached")
        steps.append("raised after the send")
    command()
    assert steps == ["send finished", "inner", "raised after the send"]


def test_an_interrupt_outside_a_send_is_raised_at_once():
    @user_errors
    def command():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    started = time.monotonic()
    with pytest.raises(BaseException) as caught:
        command()
    assert time.monotonic() - started < 2 and "interrupted" in str(caught.value)


def test_other_threads_are_not_affected():
    done = []

    def worker():
        with interrupts.sending():
            done.append(interrupts._depth)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert done == [0] and interrupts._pending is None


def test_the_handlers_are_restored_afterwards():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    user_errors(lambda: None)()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
