"""Task events to task metrics (exporter/events/tasks.py): the exception class label; poison
events through the exporter process: tests/integration/events/test_poison_events.py.
"""

from __future__ import annotations


def test_an_exception_class_from_a_traceback_is_bounded_in_length() -> None:
    from exporter.events.tasks import MAX_EXCEPTION_CLASS_CHARS, exception_class

    def traceback(qualified: str) -> str:
        return f'Traceback (most recent call last):\n  File "x.py", line 1\n{qualified}: boom'

    # Too long a name in the traceback: the repr's class, itself bounded, names it.
    assert exception_class("ValueError('x')", traceback("A" * 200_000)) == "ValueError"
    assert exception_class("B" * 500 + "('x')", traceback("A" * 200_000)) == "B" * 100
    assert exception_class("<x>", traceback("a." * 20 + "C" * 101)) == "(unknown)"
    longest = "C" * MAX_EXCEPTION_CLASS_CHARS
    assert exception_class("x", traceback("pkg.mod." + longest)) == longest
