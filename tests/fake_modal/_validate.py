"""What Modal's server would not accept: checked on every request as it arrives.

The fake answers most such requests anyway (so a test sees the whole run), and lists them in
``FakeModal.invalid`` with the reason, for tests to assert on.
"""

from __future__ import annotations

from fake_modal._rpc import Rpc


def problems_of(rpc: Rpc) -> list[str]:
    check = _CHECKS.get(rpc.name)
    return check(rpc) if check is not None else []


def _queue_get(rpc: Rpc) -> list[str]:
    request = rpc.request
    problems = []
    if request.timeout < 0:
        problems.append(
            f"QueueGet with a negative timeout ({request.timeout!r}): a blocking get whose "
            "deadline had passed before it was sent (Queue.get(..., timeout=0))"
        )
    if request.n_values < 1:
        problems.append(f"QueueGet for {request.n_values} values")
    if len(request.partition_key) > 64:
        problems.append("QueueGet with a partition key over 64 bytes")
    return problems


def _queue_put(rpc: Rpc) -> list[str]:
    request = rpc.request
    problems = []
    if not request.values:
        problems.append("QueuePut with no values")
    if len(request.partition_key) > 64:
        problems.append("QueuePut with a partition key over 64 bytes")
    if any(len(value) > 1024 * 1024 for value in request.values):
        problems.append("QueuePut of an item over 1 MiB")
    return problems


def _get_outputs(rpc: Rpc) -> list[str]:
    if rpc.request.timeout < 0:
        return [f"FunctionGetOutputs with a negative timeout ({rpc.request.timeout!r})"]
    return []


def _container_only(rpc: Rpc) -> list[str]:
    if not rpc.from_container:
        return [f"{rpc.name} from outside a container"]
    return []


_CHECKS = {
    "QueueGet": _queue_get,
    "QueuePut": _queue_put,
    "FunctionGetOutputs": _get_outputs,
    "FunctionGetInputs": _container_only,
    "FunctionPutOutputs": _container_only,
    "ContainerHeartbeat": _container_only,
    "TunnelStart": _container_only,
}
