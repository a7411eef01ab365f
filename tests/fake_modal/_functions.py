"""Functions, their calls, and the inputs and outputs between the client and containers.

The client's side: ``FunctionPrecreate``/``FunctionCreate`` define a function;
``FunctionMap`` starts a call (a map, or one input for ``.spawn``/``.remote``),
``FunctionPutInputs`` adds inputs, ``FunctionGetOutputs`` long-polls for outputs (in
completion order, each with its input's index), ``FunctionRetryInputs`` retries a failed one
under the function's ``modal.Retries`` (client-side retries, as Modal runs them for maps).

The containers' side: ``FunctionGetInputs`` long-polls for the next input of its function,
``FunctionPutOutputs`` returns the serialized result (or exception), ``ContainerHeartbeat``,
``TaskResult`` (a container that failed to start). A function gets a container per input in
flight (up to ``FakeModal.max_containers``); containers stay up and take the next input.
"""

from __future__ import annotations

import asyncio
import collections
import io
import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from grpclib import GRPCError, Status
from modal._utils.jwt_utils import DecodedJwt
from modal_proto import api_pb2

from fake_modal._faults import Fault
from fake_modal._rpc import Rpc
from fake_modal._service import Component, Context, Notifier, Service, invalid, not_found

if TYPE_CHECKING:
    from fake_modal._apps import App
    from fake_modal._containers import Container

GenericResult = api_pb2.GenericResult
SUCCESS = GenericResult.GENERIC_STATUS_SUCCESS
FAILURE = GenericResult.GENERIC_STATUS_FAILURE
TIMEOUT = GenericResult.GENERIC_STATUS_TIMEOUT
TERMINATED = GenericResult.GENERIC_STATUS_TERMINATED

GET_INPUTS_WAIT = 20.0
"""How long a container's ``FunctionGetInputs`` waits for an input before it is answered empty."""
MAX_STARTUP_CRASHES = 3
"""Containers of a function that may die before taking an input, before its inputs fail."""


@dataclass(frozen=True)
class ObjectRef:
    """A Modal object inside decoded arguments (the server does not hydrate it)."""

    object_id: str


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        return ObjectRef(pid[0]) if isinstance(pid, tuple) and len(pid) == 3 else pid


def decode(data: bytes) -> Any:
    """A value modal serialized (a queue item, arguments, a result), with Modal objects in
    it as :class:`ObjectRef`."""
    return _Unpickler(io.BytesIO(data)).load()


def decode_args(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = decode(data)
    return tuple(args), dict(kwargs)


@dataclass
class Function:
    function_id: str
    app_id: str
    name: str
    handle_metadata: api_pb2.FunctionHandleMetadata
    definition: api_pb2.Function | None = None
    """What its containers run (``ContainerArguments.function_def``); set by FunctionCreate."""
    data: api_pb2.FunctionData | None = None
    pending: collections.deque[Input] = field(default_factory=collections.deque)
    containers: list[Container] = field(default_factory=list)
    startup_crashes: int = 0
    startup_failure: api_pb2.GenericResult | None = None
    max_running: int = 0
    """The most inputs that ran at once."""

    @property
    def retry_policy(self) -> api_pb2.FunctionRetryPolicy:
        assert self.definition is not None
        return self.definition.retry_policy


@dataclass
class Call:
    call_id: str
    function: Function
    call_type: int
    invocation_type: int
    return_exceptions: bool
    inputs: dict[str, Input] = field(default_factory=dict)
    outputs: list[tuple[int, api_pb2.FunctionGetOutputsItem]] = field(default_factory=list)
    entries: int = 0
    finished_inputs: int = 0
    max_outstanding: int = 0
    """The most inputs that were out at once (put and not finished)."""

    def count_outstanding(self) -> None:
        self.max_outstanding = max(self.max_outstanding, len(self.inputs) - self.finished_inputs)

    @property
    def jwt(self) -> str:
        return DecodedJwt.encode_without_signature({"function_call_id": self.call_id})


@dataclass
class Input:
    input_id: str
    call: Call
    idx: int
    proto: api_pb2.FunctionInput
    retry_count: int = 0
    done: bool = False
    container: Container | None = None
    started_at: float = 0.0
    starts: int = 0
    """How many times a container started it (a preempted input starts again)."""
    runs: list[str] = field(default_factory=list)
    """The containers (task ids) that started it, in order."""

    @property
    def jwt(self) -> str:
        return DecodedJwt.encode_without_signature(
            {"input_id": self.input_id, "idx": self.idx, "retry_count": self.retry_count}
        )


class InputView:
    """An input as faults see it: its index, its (decoded) arguments, how often it started."""

    def __init__(self, item: Input) -> None:
        self._input = item

    @property
    def input_id(self) -> str:
        return self._input.input_id

    @property
    def idx(self) -> int:
        return self._input.idx

    @property
    def function(self) -> str:
        return self._input.call.function.name

    @property
    def starts(self) -> int:
        return self._input.starts

    @property
    def retry_count(self) -> int:
        return self._input.retry_count

    @cached_property
    def _decoded(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return decode_args(self._input.proto.args)

    @property
    def args(self) -> tuple[Any, ...]:
        return self._decoded[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self._decoded[1]


@dataclass
class Running:
    """One run of an input in a container, as faults see it."""

    input: InputView
    container: str
    rpcs: list[Rpc] = field(default_factory=list)
    """The container's requests since the input started (the current one included)."""


def _output_item(
    item: Input,
    result: api_pb2.GenericResult,
    data_format: int = 0,
    task_id: str = "",
    started: float = 0.0,
) -> api_pb2.FunctionGetOutputsItem:
    return api_pb2.FunctionGetOutputsItem(
        result=result,
        idx=item.idx,
        input_id=item.input_id,
        data_format=data_format,  # type: ignore[arg-type]
        task_id=task_id,
        input_started_at=started,
        output_created_at=time.time(),
        retry_count=item.retry_count,
    )


def exit_code_of(returncode: int) -> int:
    """The exit code as a container runtime reports it (a signal ``n`` is ``128 + n``)."""
    return 128 - returncode if returncode < 0 else returncode


class Functions(Component):
    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.functions: dict[str, Function] = {}
        self.calls: dict[str, Call] = {}
        self.inputs: dict[str, Input] = {}
        self.containers: dict[str, Container] = {}
        self._outputs_changed = Notifier()
        self._inputs_changed = Notifier()
        self._timers: set[asyncio.Task[None]] = set()

    # -- lookups -------------------------------------------------------------------------------

    def function(self, function_id: str) -> Function:
        try:
            return self.functions[function_id]
        except KeyError:
            raise not_found(f"Function {function_id} not found") from None

    def call(self, call_id: str) -> Call:
        try:
            return self.calls[call_id]
        except KeyError:
            raise not_found(f"Function call {call_id} not found") from None

    def is_dead(self, peer: str) -> bool:
        container = self.containers.get(peer)
        return container is not None and container.dead

    def layout(self, app: App) -> api_pb2.AppLayout:
        functions = [f for f in self.functions.values() if f.app_id == app.app_id]
        return api_pb2.AppLayout(
            objects=[
                api_pb2.Object(object_id=f.function_id, function_handle_metadata=f.handle_metadata)
                for f in functions
            ],
            function_ids={f.name: f.function_id for f in functions},
        )

    # -- defining functions --------------------------------------------------------------------

    async def FunctionPrecreate(
        self, request: api_pb2.FunctionPrecreateRequest, context: Context
    ) -> api_pb2.FunctionPrecreateResponse:
        self.service.apps.get(request.app_id)
        function_id = request.existing_function_id or self.ids.new("fu")
        metadata = api_pb2.FunctionHandleMetadata(
            function_name=request.function_name,
            function_type=request.function_type,
            definition_id=self.ids.new("de"),
            function_schema=request.function_schema,
            supported_input_formats=request.supported_input_formats,
            supported_output_formats=request.supported_output_formats,
            app_id=request.app_id,
        )
        self.functions[function_id] = Function(
            function_id, request.app_id, request.function_name, metadata
        )
        return api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=metadata)

    async def FunctionCreate(
        self, request: api_pb2.FunctionCreateRequest, context: Context
    ) -> api_pb2.FunctionCreateResponse:
        self.service.apps.get(request.app_id)
        if request.HasField("function_data"):
            data = request.function_data
            definition = _definition_from_data(data)
        else:
            definition = request.function
            data = _data_from_definition(definition)
        self._check_dependencies(definition)
        function_id = request.existing_function_id
        function = self.functions.get(function_id)
        if function is None:
            function_id = self.ids.new("fu")
            function = Function(
                function_id,
                request.app_id,
                definition.function_name,
                api_pb2.FunctionHandleMetadata(
                    function_name=definition.function_name,
                    function_type=definition.function_type,
                    definition_id=self.ids.new("de"),
                    app_id=request.app_id,
                ),
            )
            self.functions[function_id] = function
        function.definition = definition
        function.data = data
        return api_pb2.FunctionCreateResponse(
            function_id=function_id,
            handle_metadata=function.handle_metadata,
            function=definition,
            function_data=data,
        )

    def _check_dependencies(self, definition: api_pb2.Function) -> None:
        images = self.service.images
        if definition.image_id not in images.images:
            raise invalid(f"Function {definition.function_name}: no image {definition.image_id}")
        for mount_id in definition.mount_ids:
            if mount_id not in images.mounts:
                raise invalid(f"Function {definition.function_name}: no mount {mount_id}")
        for secret_id in definition.secret_ids:
            if secret_id not in images.secrets:
                raise invalid(f"Function {definition.function_name}: no secret {secret_id}")
        for mount in definition.volume_mounts:
            self.service.volumes.get(mount.volume_id)

    # -- calls, from the client ----------------------------------------------------------------

    def _add_input(self, call: Call, item: api_pb2.FunctionPutInputsItem) -> Input:
        new = Input(self.ids.new("in"), call, item.idx, item.input)
        if item.input.args_blob_id:
            raise invalid("the fake Modal server takes arguments inline only (no blobs)")
        call.inputs[new.input_id] = new
        self.inputs[new.input_id] = new
        return new

    def _enqueue(self, items: Iterable[Input], *, front: bool = False) -> None:
        for item in items:
            item.call.count_outstanding()
            function = item.call.function
            if function.startup_failure is not None:
                self._finish(item, function.startup_failure)
                continue
            if front:
                function.pending.appendleft(item)
            else:
                function.pending.append(item)
            self._scale(function)
        self._inputs_changed.notify()

    async def FunctionMap(
        self, request: api_pb2.FunctionMapRequest, context: Context
    ) -> api_pb2.FunctionMapResponse:
        function = self.function(request.function_id)
        if function.definition is None:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Function {function.name} is not created")
        app = self.service.apps.get(function.app_id)
        if app.stopped:
            raise GRPCError(Status.FAILED_PRECONDITION, f"App {app.app_id} is stopped")
        call = Call(
            self.ids.new("fc"),
            function,
            request.function_call_type,
            request.function_call_invocation_type,
            request.return_exceptions,
        )
        self.calls[call.call_id] = call
        added = [self._add_input(call, item) for item in request.pipelined_inputs]
        self._enqueue(added)
        return api_pb2.FunctionMapResponse(
            function_call_id=call.call_id,
            function_call_jwt=call.jwt,
            pipelined_inputs=[
                api_pb2.FunctionPutInputsResponseItem(
                    idx=item.idx, input_id=item.input_id, input_jwt=item.jwt
                )
                for item in added
            ],
            retry_policy=function.retry_policy,
            sync_client_retries_enabled=self.server.client_retries,
            max_inputs_outstanding=1000,
        )

    async def FunctionPutInputs(
        self, request: api_pb2.FunctionPutInputsRequest, context: Context
    ) -> api_pb2.FunctionPutInputsResponse:
        call = self.call(request.function_call_id)
        if call.function.function_id != request.function_id:
            raise invalid(f"call {call.call_id} is not a call of {request.function_id}")
        added = [self._add_input(call, item) for item in request.inputs]
        self._enqueue(added)
        return api_pb2.FunctionPutInputsResponse(
            inputs=[
                api_pb2.FunctionPutInputsResponseItem(
                    idx=item.idx, input_id=item.input_id, input_jwt=item.jwt
                )
                for item in added
            ]
        )

    async def FunctionFinishInputs(
        self, request: api_pb2.FunctionFinishInputsRequest, context: Context
    ) -> Empty:
        self.call(request.function_call_id)
        return Empty()

    async def FunctionRetryInputs(
        self, request: api_pb2.FunctionRetryInputsRequest, context: Context
    ) -> api_pb2.FunctionRetryInputsResponse:
        call_id = DecodedJwt.decode_without_verification(request.function_call_jwt).payload[
            "function_call_id"
        ]
        call = self.call(call_id)
        retried = []
        for item in request.inputs:
            input_id = DecodedJwt.decode_without_verification(item.input_jwt).payload["input_id"]
            retry = call.inputs.get(input_id)
            if retry is None:
                raise not_found(f"input {input_id} not found in {call.call_id}")
            if not retry.done:
                raise GRPCError(Status.FAILED_PRECONDITION, f"input {input_id} has not failed")
            retry.done = False
            call.finished_inputs -= 1
            retry.retry_count = max(item.retry_count, retry.retry_count + 1)
            retry.proto = item.input
            retried.append(retry)
        self._enqueue(retried)
        return api_pb2.FunctionRetryInputsResponse(input_jwts=[item.jwt for item in retried])

    async def FunctionGetOutputs(
        self, request: api_pb2.FunctionGetOutputsRequest, context: Context
    ) -> api_pb2.FunctionGetOutputsResponse:
        call = self.call(request.function_call_id)
        last = int(request.last_entry_id.split("-")[0] or 0) if request.last_entry_id else 0
        unary = call.call_type == api_pb2.FUNCTION_CALL_TYPE_UNARY

        def available() -> list[tuple[int, api_pb2.FunctionGetOutputsItem]]:
            return [
                (entry, item)
                for entry, item in call.outputs
                if entry > last
                and (
                    not unary
                    or request.start_idx <= item.idx <= max(request.end_idx, request.start_idx)
                )
            ]

        app = self.service.apps.get(call.function.app_id)
        await self._outputs_changed.wait_until(
            lambda: available() or app.stopped, max(0.0, request.timeout)
        )
        found = available()
        if request.max_values > 0:
            found = found[: request.max_values]
        if request.clear_on_success:
            taken = {entry for entry, _ in found}
            call.outputs = [(e, item) for e, item in call.outputs if e not in taken]
        return api_pb2.FunctionGetOutputsResponse(
            outputs=[item for _, item in found],
            idxs=[item.idx for _, item in found],
            last_entry_id=f"{found[-1][0]}-0" if found else (request.last_entry_id or "0-0"),
            num_unfinished_inputs=len(call.inputs) - call.finished_inputs,
        )

    async def FunctionCallCancel(
        self, request: api_pb2.FunctionCallCancelRequest, context: Context
    ) -> Empty:
        call = self.call(request.function_call_id)
        for item in call.inputs.values():
            if item.done:
                continue
            if item in call.function.pending:
                call.function.pending.remove(item)
            container = item.container
            self._finish(item, GenericResult(status=TERMINATED, exception="cancelled"))
            if container is not None and request.terminate_containers:
                await container.kill("cancelled")
        return Empty()

    # -- outputs -------------------------------------------------------------------------------

    def _finish(
        self,
        item: Input,
        result: api_pb2.GenericResult,
        data_format: int = 0,
        task_id: str = "",
    ) -> None:
        if item.done:
            return
        item.done = True
        call = item.call
        call.finished_inputs += 1
        call.entries += 1
        call.outputs.append(
            (call.entries, _output_item(item, result, data_format, task_id, item.started_at))
        )
        container = item.container
        item.container = None
        if container is not None and container.running is item:
            container.running = None
        self._outputs_changed.notify()
        self.server.notify()

    # -- containers ----------------------------------------------------------------------------

    def _scale(self, function: Function) -> None:
        """Start containers until there is one for each input waiting or running."""
        app = self.service.apps.get(function.app_id)
        if app.stopped or function.definition is None:
            return
        live = [c for c in function.containers if not c.dead]
        busy = sum(1 for c in live if c.running is not None)
        limit = function.definition.concurrency_limit or self.server.max_containers
        wanted = min(limit, self.server.max_containers, busy + len(function.pending))
        from fake_modal._containers import Container

        for _ in range(wanted - len(live)):
            container = Container(self, function, self.ids.new("ta"))
            function.containers.append(container)
            self.containers[container.task_id] = container
            container.start()

    def _container(self, context: Context) -> Container:
        container = self.containers.get(context.peer)
        if container is None:
            raise GRPCError(Status.PERMISSION_DENIED, f"{context.peer} is not a container")
        return container

    async def ContainerHello(self, request: Empty, context: Context) -> Empty:
        self._container(context).hello = True
        return Empty()

    async def ContainerHeartbeat(
        self, request: api_pb2.ContainerHeartbeatRequest, context: Context
    ) -> api_pb2.ContainerHeartbeatResponse:
        self._container(context).heartbeats += 1
        return api_pb2.ContainerHeartbeatResponse()

    async def FunctionGetInputs(
        self, request: api_pb2.FunctionGetInputsRequest, context: Context
    ) -> api_pb2.FunctionGetInputsResponse:
        container = self._container(context)
        function = container.function
        if request.function_id != function.function_id:
            raise invalid(
                f"{container.task_id} runs {function.function_id}, not {request.function_id}"
            )
        if container.running is not None:
            raise GRPCError(
                Status.FAILED_PRECONDITION, f"{container.task_id} asked for a second input"
            )
        container.waiting = True
        try:
            await self._inputs_changed.wait_until(
                lambda: function.pending or container.dead, GET_INPUTS_WAIT
            )
        finally:
            container.waiting = False
        if container.dead or not function.pending:
            return api_pb2.FunctionGetInputsResponse()  # it asks again
        item = function.pending.popleft()
        self._start_input(container, item)
        return api_pb2.FunctionGetInputsResponse(
            inputs=[
                api_pb2.FunctionGetInputsItem(
                    input_id=item.input_id,
                    input=item.proto,
                    function_call_id=item.call.call_id,
                    function_call_invocation_type=item.call.invocation_type,  # type: ignore[arg-type]
                    retry_count=item.retry_count,
                    function_map_idx=item.idx,
                    attempt_token=f"at-{item.input_id}-{item.starts}",
                )
            ]
        )

    def _start_input(self, container: Container, item: Input) -> None:
        item.container = container
        item.starts += 1
        item.runs.append(container.task_id)
        item.started_at = time.time()
        container.running = item
        container.run = Running(InputView(item), container.task_id)
        container.inputs_taken += 1
        function = item.call.function
        running = sum(1 for c in function.containers if c.running is not None)
        function.max_running = max(function.max_running, running)
        self._arm(container, item)

    def _arm(self, container: Container, item: Input) -> None:
        """Start the clocks of this run: the function's timeout and faults with ``after``."""
        starts = item.starts

        async def at(delay: float, fire: Any) -> None:
            await asyncio.sleep(delay)
            if container.running is item and item.starts == starts and not container.dead:
                await fire()

        def schedule(delay: float, fire: Any) -> None:
            task = asyncio.get_running_loop().create_task(at(delay, fire))
            self._timers.add(task)
            task.add_done_callback(self._timers.discard)

        schedule(self.timeout_of(item.call.function), lambda: self._time_out(container, item))
        view = container.run.input if container.run else InputView(item)
        for fault in self.server.faults.rules:
            if fault.kind == "error" or fault.spent or fault.on is not None:
                continue
            if fault.match(view):
                fault.fired.append(item.input_id)  # claimed now, so it fires once per input
                schedule(fault.after or 0.0, lambda fault=fault: self._fire(fault, container))

    async def _fire(self, fault: Fault, container: Container) -> None:
        item = container.running
        if item is None:
            return
        if fault.kind == "preempt":
            await container.kill("preempted")
            if not item.done:
                item.container = None
                self._enqueue([item], front=True)  # Modal runs the same input again
        elif fault.kind == "crash":
            await container.kill("crashed")  # on_exit fails the input with the exit code
        elif fault.kind == "timeout":
            await self._time_out(container, item)

    def timeout_of(self, function: Function) -> float:
        """How long an input of ``function`` may run (``FakeModal.timeouts`` overrides)."""
        if function.name in self.server.timeouts:
            return self.server.timeouts[function.name]
        return float(function.definition.timeout_secs) if function.definition else 300.0

    async def _time_out(self, container: Container, item: Input) -> None:
        timeout = self.timeout_of(item.call.function)
        self._finish(
            item,
            GenericResult(
                status=TIMEOUT,
                exception=f"Task's current input {item.input_id} hit its timeout of {timeout:g}s",
            ),
            task_id=container.task_id,
        )
        await container.kill("timed out")  # it would be cancelled; here it is stopped

    def before(self, rpc: Rpc) -> None:
        container = self.containers.get(rpc.peer)
        if container is not None and container.dead:
            rpc.dropped = True  # sent before it died, arriving after: it never arrives
            return
        run = container.run if container is not None and container.running else None
        if run is not None:
            run.rpcs.append(rpc)
        for fault in self.server.faults.rules:
            if fault.spent or fault.on is None:
                continue
            if fault.kind == "error":
                if fault.on(rpc, run):
                    fault.fired.append(rpc.name)
                    rpc.injected = GRPCError(fault.status, fault.message)
                continue
            if run is None or container is None or not fault.match(run.input):
                continue
            if fault.on(rpc, run):
                fault.fired.append(run.input.input_id)
                rpc.dropped = True
                container.dead = True  # from this request on, nothing it sends arrives
                asyncio.get_running_loop().create_task(self._fire(fault, container))

    async def FunctionPutOutputs(
        self, request: api_pb2.FunctionPutOutputsRequest, context: Context
    ) -> Empty:
        container = self._container(context)
        for output in request.outputs:
            item = self.inputs.get(output.input_id)
            if item is None:
                raise not_found(f"input {output.input_id} not found")
            if item.container is not container or item.retry_count != output.retry_count:
                container.stale_outputs.append(output)  # from a run the server gave up on
                continue
            self._finish(item, output.result, output.data_format, container.task_id)
        self._inputs_changed.notify()
        return Empty()

    async def TaskResult(self, request: api_pb2.TaskResultRequest, context: Context) -> Empty:
        container = self._container(context)
        container.task_result = request.result
        function = container.function
        if request.result.status != SUCCESS and container.inputs_taken == 0:
            # It failed to start (its imports raised): for an ephemeral App, Modal fails the
            # function's inputs with that exception.
            function.startup_failure = request.result
            for item in list(function.pending):
                function.pending.remove(item)
                self._finish(item, request.result, task_id=container.task_id)
        return Empty()

    async def ContainerStop(
        self, request: api_pb2.ContainerStopRequest, context: Context
    ) -> Empty:
        container = self.containers.get(request.task_id)
        if container is not None:
            await container.kill("stopped")
        return Empty()

    async def container_exited(self, container: Container, returncode: int) -> None:
        """A container process ended, on its own or killed."""
        container.dead = True
        function = container.function
        item = container.running
        if item is not None and not item.done and container.killed_for != "preempted":
            code = exit_code_of(returncode)
            self._finish(
                item,
                GenericResult(
                    status=FAILURE,
                    exception=f"Runner failed with exit code: {code}",
                    exitcode=code,
                ),
                task_id=container.task_id,
            )
        elif item is None and container.inputs_taken == 0 and container.killed_for is None:
            function.startup_crashes += 1
            if (
                function.startup_crashes >= MAX_STARTUP_CRASHES
                and function.startup_failure is None
            ):
                function.startup_failure = container.task_result or GenericResult(
                    status=FAILURE,
                    exception=f"Runner failed with exit code: {exit_code_of(returncode)}",
                )
                for pending in list(function.pending):
                    function.pending.remove(pending)
                    self._finish(pending, function.startup_failure, task_id=container.task_id)
        container.running = None
        self.service.volumes.unmount(container.task_id)
        await self.service.tunnels.close_for(container.task_id)
        await self.server.close_socket(container.task_id)
        self._inputs_changed.notify()
        self.server.notify()
        if function.pending:
            self._scale(function)

    async def stop_app(self, app: App) -> None:
        """The App stopped: its containers are stopped, its calls get no more outputs."""
        containers = [
            c for f in self.functions.values() if f.app_id == app.app_id for c in f.containers
        ]
        for function in self.functions.values():
            if function.app_id == app.app_id:
                function.pending.clear()
        await asyncio.gather(*(c.kill("app stopped") for c in containers if not c.dead))
        self._inputs_changed.notify()
        self._outputs_changed.notify()

    async def shutdown(self) -> None:
        for task in list(self._timers):
            task.cancel()
        await asyncio.gather(
            *(c.kill("server stopped") for c in self.containers.values() if not c.dead)
        )


def _common_fields(source: Message, target_type: type[Message]) -> Message:
    """A ``target_type`` message with the fields of ``source`` that it has too (same name,
    same type)."""
    target_fields = target_type.DESCRIPTOR.fields_by_name
    shared = {
        name: value
        for name, value in json_format.MessageToDict(
            source, preserving_proto_field_name=True
        ).items()
        if name in target_fields
        and target_fields[name].type == source.DESCRIPTOR.fields_by_name[name].type
        and name != "ranked_functions"
    }
    return json_format.ParseDict(shared, target_type(), ignore_unknown_fields=True)


def _definition_from_data(data: api_pb2.FunctionData) -> api_pb2.Function:
    """The Function a container runs, from FunctionData (the shared fields and the first of
    its ranked variants, which differ only in resources)."""
    if not data.ranked_functions:
        raise invalid("FunctionData has no ranked functions")
    definition = api_pb2.Function()
    definition.CopyFrom(data.ranked_functions[0].function)
    definition.MergeFrom(_common_fields(data, api_pb2.Function))
    return definition


def _data_from_definition(definition: api_pb2.Function) -> api_pb2.FunctionData:
    data = _common_fields(definition, api_pb2.FunctionData)
    assert isinstance(data, api_pb2.FunctionData)
    data.ranked_functions.append(api_pb2.FunctionData.RankedFunction(rank=0, function=definition))
    return data
