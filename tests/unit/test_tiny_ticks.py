"""The tiny guest's counter, as tests read it off the serial console log."""

from __future__ import annotations

from workers.guest.tiny import ticks_in

# The start of a real console log (libvirt's <log> of the pty serial, amd64 tiny guest under TCG): the shell
# on the console starts between ticks 1 and 2, and its prompt has no newline, so tick 2 shares its line.
BOOT = (
    b"\r\nARCHQ-TINY-BOOTED arch=x86_64\r\narchq-tiny tick 1\r\n\r\n\r\n"
    b"BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) built-in shell (ash)\r\n"
    b"Enter 'help' for a list of built-in commands.\r\n\r\n"
    b"sh: can't access tty; job control turned off\r\n"
    b"/ # \x1b[6narchq-tiny tick 2\r\narchq-tiny tick 3\r\narchq-tiny tick 4\r\n"
).decode()


def test_a_tick_after_the_shells_prompt_counts() -> None:
    assert ticks_in(BOOT) == [1, 2, 3, 4]


def test_a_tick_after_a_command_typed_on_the_console_counts() -> None:
    session = "/ # echo hi\r\nhi\r\n/ # archq-tiny tick 5\r\narchq-tiny tick 6\r\n"
    assert ticks_in(BOOT + session) == [1, 2, 3, 4, 5, 6]


def test_a_tick_while_a_command_is_typed_counts() -> None:
    # Keys typed one by one (a person at `archq vm console`): the shell echoes each as it comes.
    typing = "/ # \x1b[6necho hiarchq-tiny tick 5\r\n there\r\nhi there\r\n/ # \x1b[6narchq-tiny tick 6\r\n"
    assert ticks_in(BOOT + typing) == [1, 2, 3, 4, 5, 6]


def test_only_lines_ending_with_a_whole_tick_count() -> None:
    text = "archq-tiny tick 8 and more\r\narchq-tiny tick \r\narchq-tiny tick x9\r\narchq-tiny tick 9\r\n"
    assert ticks_in(text) == [9]
