"""``modal.Queue``: FIFO partitions of serialized values, blocking gets that wait up to their
timeout for a put, and a limit on partition keys and item sizes as Modal has them."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from google.protobuf.empty_pb2 import Empty
from modal_proto import api_pb2

from fake_modal._service import Component, Context, Notifier, Service, invalid, not_found

MAX_ITEM_BYTES = 1024 * 1024
MAX_PARTITION_KEY_BYTES = 64
MAX_GET_TIMEOUT = 60.0
"""Longer blocking gets than this are refused (the client asks for at most 50 s)."""


@dataclass
class Queue:
    queue_id: str
    name: str = ""
    partitions: dict[bytes, collections.deque[bytes]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )
    heartbeats: int = 0
    puts: int = 0


class Queues(Component):
    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.queues: dict[str, Queue] = {}
        self._named: dict[str, str] = {}
        self._changed = Notifier()

    def get(self, queue_id: str) -> Queue:
        try:
            return self.queues[queue_id]
        except KeyError:
            raise not_found(f"Queue {queue_id} not found") from None

    def _create(self, name: str = "") -> Queue:
        queue = Queue(self.ids.new("qu"), name)
        self.queues[queue.queue_id] = queue
        if name:
            self._named[name] = queue.queue_id
        return queue

    async def QueueGetOrCreate(
        self, request: api_pb2.QueueGetOrCreateRequest, context: Context
    ) -> api_pb2.QueueGetOrCreateResponse:
        name = request.deployment_name
        if name and name in self._named:
            queue = self.queues[self._named[name]]
        elif (
            name and request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
        ):
            raise not_found(f"Queue '{name}' not found")
        else:
            queue = self._create(name)
        return api_pb2.QueueGetOrCreateResponse(
            queue_id=queue.queue_id, metadata=api_pb2.QueueMetadata(name=queue.name)
        )

    async def QueueGetById(
        self, request: api_pb2.QueueGetByIdRequest, context: Context
    ) -> api_pb2.QueueGetByIdResponse:
        queue = self.get(request.queue_id)
        return api_pb2.QueueGetByIdResponse(
            queue_id=queue.queue_id, metadata=api_pb2.QueueMetadata(name=queue.name)
        )

    async def QueueHeartbeat(
        self, request: api_pb2.QueueHeartbeatRequest, context: Context
    ) -> Empty:
        self.get(request.queue_id).heartbeats += 1
        return Empty()

    async def QueuePut(self, request: api_pb2.QueuePutRequest, context: Context) -> Empty:
        queue = self.get(request.queue_id)
        if len(request.partition_key) > MAX_PARTITION_KEY_BYTES:
            raise invalid("Queue partition key must be at most 64 bytes")
        for value in request.values:
            if len(value) > MAX_ITEM_BYTES:
                raise invalid(f"Queue item of {len(value)} bytes is over the 1 MiB limit")
        queue.partitions[request.partition_key].extend(request.values)
        queue.puts += 1
        self._changed.notify()
        return Empty()

    async def QueueGet(
        self, request: api_pb2.QueueGetRequest, context: Context
    ) -> api_pb2.QueueGetResponse:
        queue = self.get(request.queue_id)
        if request.timeout > MAX_GET_TIMEOUT:
            raise invalid(f"Queue get timeout {request.timeout} is over {MAX_GET_TIMEOUT}s")
        items = queue.partitions[request.partition_key]
        n_values = max(1, request.n_values)
        # A negative timeout (a client bug, see _validate) is taken as "do not wait".
        await self._changed.wait_until(lambda: bool(items), max(0.0, request.timeout))
        if self.service.functions.is_dead(context.peer):
            return api_pb2.QueueGetResponse()  # its container is gone: nothing is taken
        values = [items.popleft() for _ in range(min(n_values, len(items)))]
        return api_pb2.QueueGetResponse(values=values)

    async def QueueLen(
        self, request: api_pb2.QueueLenRequest, context: Context
    ) -> api_pb2.QueueLenResponse:
        queue = self.get(request.queue_id)
        if request.total:
            return api_pb2.QueueLenResponse(len=sum(len(p) for p in queue.partitions.values()))
        return api_pb2.QueueLenResponse(len=len(queue.partitions[request.partition_key]))

    async def QueueClear(self, request: api_pb2.QueueClearRequest, context: Context) -> Empty:
        queue = self.get(request.queue_id)
        if request.all_partitions:
            queue.partitions.clear()
        else:
            queue.partitions.pop(request.partition_key, None)
        return Empty()

    def items(self, queue_id: str, partition: str | None = None) -> list[bytes]:
        """What a partition holds now (serialized), for tests."""
        key = b"" if partition is None else partition.encode()
        return list(self.queues[queue_id].partitions.get(key, ()))
