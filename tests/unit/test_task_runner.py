"""The task runner's per-task fast paths give what the general path gives, without sockets."""

from __future__ import annotations

import pickle

from rayipy.node.data_port import DIRECT_RESULT_BYTES, is_large
from rayipy.node.task_runner import NO_ARGUMENTS, TaskRunner
from rayipy.node.worker import _surely_small
from rayipy.protocol import serialization
from rayipy.protocol.messages import OK, Payload, TaskResult, TaskSpec

FN_ID = b"f" * 16


def _runner() -> TaskRunner:
    runner = TaskRunner(None, "here", lambda task_id: None, lambda spec, instance: None)
    runner.functions[FN_ID] = lambda *args, **kwargs: (args, kwargs)
    return runner


def _spec(args: tuple = (), kwargs: dict | None = None, task_id: bytes = b"t" * 16) -> TaskSpec:
    payload, _ = serialization.dumps_arguments(args, kwargs or {}, "f")
    return TaskSpec(task_id, FN_ID, "f", payload, (), 1, (), 0)


def test_no_arguments_are_recognised_as_the_callers_bytes():
    assert _spec().args == Payload(NO_ARGUMENTS)


def test_no_arguments_give_a_fresh_kwargs_dict_per_call():
    runner = _runner()
    _, args1, kwargs1 = runner.prepare(_spec())
    kwargs1["kept"] = 1        # a function may keep or change its kwargs
    _, args2, kwargs2 = runner.prepare(_spec())
    assert (tuple(args1), tuple(args2)) == ((), ())
    assert kwargs2 == {} and kwargs2 is not kwargs1


def test_arguments_still_unpickled():
    runner = _runner()
    _, args, kwargs = runner.prepare(_spec((1, "a"), {"k": [2]}))
    assert (tuple(args), kwargs) == ((1, "a"), {"k": [2]})


def test_none_result_equals_the_general_one():
    runner = _runner()
    spec = _spec()
    fast = runner.pack_returns(spec, None, 0.5)
    payload, _ = serialization.dumps(None)
    assert fast == TaskResult(spec.task_id, OK, (payload,), 0.5, "here", ())
    assert type(fast) is TaskResult
    assert serialization.loads(fast.values[0]) is None


def test_value_result_equals_the_general_one():
    result = _runner().pack_returns(_spec(), {"x": 1}, 0.5)
    assert type(result) is TaskResult and result.status == OK
    assert serialization.loads(result.values[0]) == {"x": 1}


def test_surely_small_never_contradicts_is_large():
    big_inband = Payload(pickle.dumps(b"x" * (DIRECT_RESULT_BYTES + 1), protocol=5))
    big_buffer = Payload(b"", (memoryview(b"y" * (DIRECT_RESULT_BYTES + 1)),))
    small = Payload(b"abc")
    small_buffer = Payload(b"", (memoryview(b"y" * 10),))
    for values in [(small,), (big_inband,), (big_buffer,), (small_buffer,), (small, small),
                   (small, big_buffer), ()]:
        result = TaskResult(b"t" * 16, OK, values, 0.0, "here", ())
        if _surely_small(result):
            assert not is_large(result), values
    assert _surely_small(TaskResult(b"t" * 16, OK, (small,), 0.0, "here", ()))
    assert not _surely_small(TaskResult(b"t" * 16, OK, (big_inband,), 0.0, "here", ()))


def test_a_task_raising_keyboard_interrupt_itself_fails_as_a_task_error_not_a_cancel():
    from rayipy.exceptions import TaskCancelledError, TaskError
    from rayipy.protocol import errors
    from rayipy.protocol.messages import ERROR

    def interrupts():
        raise KeyboardInterrupt

    runner = _runner()
    runner.functions[FN_ID] = interrupts
    result = runner.run(_spec(), None)
    assert result.status == ERROR
    err = errors.rebuild_error(result.values[0])
    assert isinstance(err, TaskError) and not isinstance(err, TaskCancelledError)
    assert isinstance(err.cause, KeyboardInterrupt) and err.function_name == "f"


def test_a_cancelled_task_is_still_reported_cancelled():
    from rayipy.protocol.messages import CANCELLED

    runner = _runner()
    spec = _spec()
    runner.cancel_requested = spec.task_id   # its SIGINT came before the task ran
    assert runner.run(spec, None).status == CANCELLED
