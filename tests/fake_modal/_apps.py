"""Apps, environments and the client's hello: what ``app.run()`` sends before and after the
objects it creates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from google.protobuf.empty_pb2 import Empty
from modal_proto import api_pb2

from fake_modal._service import Component, Context, Service, not_found

IMAGE_BUILDER_VERSION = "2025.06"


@dataclass
class App:
    app_id: str
    description: str
    state: int
    function_ids: dict[str, str] = field(default_factory=dict)
    heartbeats: int = 0
    disconnected: api_pb2.AppClientDisconnectRequest | None = None

    @property
    def stopped(self) -> bool:
        return self.disconnected is not None


class Apps(Component):
    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.apps: dict[str, App] = {}
        self.environment_id = self.ids.new("en")

    def get(self, app_id: str) -> App:
        try:
            return self.apps[app_id]
        except KeyError:
            raise not_found(f"App {app_id} not found") from None

    async def ClientHello(self, request: Empty, context: Context) -> api_pb2.ClientHelloResponse:
        return api_pb2.ClientHelloResponse(image_builder_version=IMAGE_BUILDER_VERSION)

    async def EnvironmentGetOrCreate(
        self, request: api_pb2.EnvironmentGetOrCreateRequest, context: Context
    ) -> api_pb2.EnvironmentGetOrCreateResponse:
        name = request.deployment_name or "main"
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=self.environment_id,
            metadata=api_pb2.EnvironmentMetadata(
                name=name,
                settings=api_pb2.EnvironmentSettings(
                    image_builder_version=IMAGE_BUILDER_VERSION, webhook_suffix="fake-modal.run"
                ),
            ),
        )

    async def AppCreate(
        self, request: api_pb2.AppCreateRequest, context: Context
    ) -> api_pb2.AppCreateResponse:
        app = App(self.ids.new("ap"), request.description, request.app_state)
        self.apps[app.app_id] = app
        return api_pb2.AppCreateResponse(
            app_id=app.app_id,
            app_page_url=f"https://modal.invalid/apps/{app.app_id}",
            app_logs_url=f"https://modal.invalid/logs/{app.app_id}",
        )

    async def AppHeartbeat(self, request: api_pb2.AppHeartbeatRequest, context: Context) -> Empty:
        self.get(request.app_id).heartbeats += 1
        return Empty()

    async def AppPublish(
        self, request: api_pb2.AppPublishRequest, context: Context
    ) -> api_pb2.AppPublishResponse:
        app = self.get(request.app_id)
        app.function_ids = dict(request.function_ids)
        app.state = request.app_state
        return api_pb2.AppPublishResponse(url=f"https://modal.invalid/apps/{app.app_id}")

    async def AppGetLayout(
        self, request: api_pb2.AppGetLayoutRequest, context: Context
    ) -> api_pb2.AppGetLayoutResponse:
        return api_pb2.AppGetLayoutResponse(
            app_layout=self.service.functions.layout(self.get(request.app_id))
        )

    async def AppClientDisconnect(
        self, request: api_pb2.AppClientDisconnectRequest, context: Context
    ) -> Empty:
        app = self.get(request.app_id)
        app.disconnected = request
        await self.service.functions.stop_app(app)  # an ephemeral App's containers stop
        self.server.notify()
        return Empty()

    async def AppGetLogs(
        self, request: api_pb2.AppGetLogsRequest, context: Context
    ) -> AsyncIterator[api_pb2.TaskLogsBatch]:
        # With `modal.enable_output()` the client streams logs; containers' output goes to
        # their log files instead (see Container.log).
        return
        yield
