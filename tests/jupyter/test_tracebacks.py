"""The pure parts of how a notebook shows task errors, interrupts and cell numbers."""

from __future__ import annotations

from rayipy.jupyter.remote import number_of_running_cell
from rayipy.jupyter.tracebacks import cell_names, interrupt_line


def test_frames_of_a_cells_file_read_as_ipython_writes_them():
    text = ('Traceback (most recent call last):\n'
            '  File "/tmp/ipykernel_7/123.py", line 6, in boom\n'
            '    raise ValueError(x)\n'
            '  File "/usr/lib/python3.11/json/__init__.py", line 2, in loads\n')
    shown = cell_names(text, {"/tmp/ipykernel_7/123.py": 3})
    assert '  Cell In[3], line 6, in boom\n' in shown
    assert 'File "/usr/lib/python3.11/json/__init__.py", line 2, in loads' in shown
    assert cell_names(text, {}) == text


def test_the_interrupt_line_counts_tasks():
    assert interrupt_line(20).endswith("KeyboardInterrupt\x1b[0m: interrupted: 20 tasks cancelled")
    assert interrupt_line(1).endswith("interrupted: 1 task cancelled")


def test_a_running_cells_number_is_the_count_before_ipython_moved_it_on():
    assert number_of_running_cell(11, store_history=True) == 10
    assert number_of_running_cell(11, store_history=False) == 11
