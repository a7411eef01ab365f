"""Images, mounts and secrets: what a function's containers are made of.

An image "builds" by streaming one log line per Dockerfile command (nothing is installed:
containers run this machine's Python and site-packages). Mounts are kept file by file and
written out under each container's root when it starts (see :mod:`fake_modal._containers`),
so a container imports the files the client uploaded, not the ones in this checkout.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modal_proto import api_pb2

from fake_modal._apps import IMAGE_BUILDER_VERSION
from fake_modal._service import Component, Context, Service, invalid, not_found

SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
FAILURE = api_pb2.GenericResult.GENERIC_STATUS_FAILURE


@dataclass
class Image:
    image_id: str
    definition: api_pb2.Image
    builds: int = 0
    result: api_pb2.GenericResult | None = None
    logs: list[str] = field(default_factory=list)
    built: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Mount:
    mount_id: str
    files: list[api_pb2.MountFile]


@dataclass
class Secret:
    secret_id: str
    name: str
    env: dict[str, str]


def _metadata() -> api_pb2.ImageMetadata:
    return api_pb2.ImageMetadata(
        python_version_info=f"Python {platform.python_version()}",
        image_builder_version=IMAGE_BUILDER_VERSION,
        workdir="/root",
    )


class Images(Component):
    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.images: dict[str, Image] = {}
        self._by_definition: dict[bytes, str] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content
        self.mounts: dict[str, Mount] = {}
        self._named_mounts: dict[tuple[int, str], str] = {}
        self.secrets: dict[str, Secret] = {}
        self._named_secrets: dict[str, str] = {}
        for name, env in self.server.secrets.items():
            self.add_secret(name, dict(env))

    # -- images --------------------------------------------------------------------------------

    async def ImageGetOrCreate(
        self, request: api_pb2.ImageGetOrCreateRequest, context: Context
    ) -> api_pb2.ImageGetOrCreateResponse:
        key = request.image.SerializeToString(deterministic=True)
        image_id = self._by_definition.get(key)
        image = self.images.get(image_id) if image_id else None
        if image is not None and image.result is not None and image.result.status == SUCCESS:
            return api_pb2.ImageGetOrCreateResponse(
                image_id=image.image_id, result=image.result, metadata=_metadata()
            )
        if image is None:
            image = Image(self.ids.new("im"), request.image)
            self.images[image.image_id] = image
            self._by_definition[key] = image.image_id
        image.result = None
        image.built = asyncio.Event()
        image.builds += 1
        asyncio.get_running_loop().create_task(self._build(image))
        return api_pb2.ImageGetOrCreateResponse(image_id=image.image_id)

    async def _build(self, image: Image) -> None:
        image.logs = []
        failing = self.server.faults.failing_build(image.definition)
        for command in image.definition.dockerfile_commands:
            image.logs.append(f"=> {command}\n")
            if failing is not None and failing in command:
                image.logs.append(f"ERROR: the build step failed (fault: {failing!r})\n")
                image.result = api_pb2.GenericResult(status=FAILURE, exitcode=1)
                break
        else:
            image.result = api_pb2.GenericResult(status=SUCCESS)
        image.built.set()

    async def ImageJoinStreaming(
        self, request: api_pb2.ImageJoinStreamingRequest, context: Context
    ) -> AsyncIterator[api_pb2.ImageJoinStreamingResponse]:
        image = self.images.get(request.image_id)
        if image is None:
            raise not_found(f"Image {request.image_id} not found")
        try:
            await asyncio.wait_for(image.built.wait(), request.timeout or 55)
        except asyncio.TimeoutError:
            return  # the client asks again
        start = int(request.last_entry_id or 0)
        for index, line in enumerate(image.logs[start:], start + 1):
            yield api_pb2.ImageJoinStreamingResponse(
                task_logs=[
                    api_pb2.TaskLogs(data=line, file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT)
                ],
                entry_id=str(index),
            )
        yield api_pb2.ImageJoinStreamingResponse(
            result=image.result, metadata=_metadata(), eof=True, entry_id=str(len(image.logs))
        )

    # -- mounts --------------------------------------------------------------------------------

    async def MountBatchedCheckExistence(
        self, request: api_pb2.MountBatchedCheckExistenceRequest, context: Context
    ) -> api_pb2.MountBatchedCheckExistenceResponse:
        missing = [sha for sha in request.sha256_hex_hashes if sha not in self.blobs]
        return api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing)

    async def MountPutFile(
        self, request: api_pb2.MountPutFileRequest, context: Context
    ) -> api_pb2.MountPutFileResponse:
        if request.WhichOneof("data_oneof") == "data":
            self.blobs[request.sha256_hex] = request.data
        elif request.WhichOneof("data_oneof") == "data_blob_id":
            raise invalid("the fake Modal server takes file contents inline only (no blobs)")
        return api_pb2.MountPutFileResponse(exists=request.sha256_hex in self.blobs)

    async def MountGetOrCreate(
        self, request: api_pb2.MountGetOrCreateRequest, context: Context
    ) -> api_pb2.MountGetOrCreateResponse:
        if request.deployment_name and not request.files:
            return self._named_mount(request)
        missing = [f.filename for f in request.files if f.sha256_hex not in self.blobs]
        if missing:
            raise invalid(f"mount files were never uploaded: {missing[:3]}")
        mount = Mount(self.ids.new("mo"), list(request.files))
        self.mounts[mount.mount_id] = mount
        return api_pb2.MountGetOrCreateResponse(
            mount_id=mount.mount_id, handle_metadata=api_pb2.MountHandleMetadata()
        )

    def _named_mount(
        self, request: api_pb2.MountGetOrCreateRequest
    ) -> api_pb2.MountGetOrCreateResponse:
        """A published mount. Only modal's client mount is known, and it is empty: containers
        run the modal package installed here."""
        key = (request.namespace, request.deployment_name)
        mount_id = self._named_mounts.get(key)
        if mount_id is None:
            if not request.deployment_name.startswith("modal-client-mount-"):
                raise not_found(f"Mount '{request.deployment_name}' not found")
            mount_id = self.ids.new("mo")
            self.mounts[mount_id] = Mount(mount_id, [])
            self._named_mounts[key] = mount_id
        return api_pb2.MountGetOrCreateResponse(
            mount_id=mount_id, handle_metadata=api_pb2.MountHandleMetadata()
        )

    def mount_files(self, mount_id: str) -> list[tuple[str, bytes, int]]:
        """(path in the container, content, mode) of each file of a mount."""
        mount = self.mounts[mount_id]
        return [(f.filename, self.blobs[f.sha256_hex], f.mode) for f in mount.files]

    # -- secrets -------------------------------------------------------------------------------

    def add_secret(self, name: str, env: dict[str, str]) -> Secret:
        secret = Secret(self.ids.new("st"), name, env)
        self.secrets[secret.secret_id] = secret
        if name:
            self._named_secrets[name] = secret.secret_id
        return secret

    async def SecretGetOrCreate(
        self, request: api_pb2.SecretGetOrCreateRequest, context: Context
    ) -> api_pb2.SecretGetOrCreateResponse:
        name = request.deployment_name
        creation = request.object_creation_type
        if (
            name
            and name in self._named_secrets
            and creation
            in (
                api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED,
                api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
            )
        ):
            secret = self.secrets[self._named_secrets[name]]
            lacking = [key for key in request.required_keys if key not in secret.env]
            if lacking:
                raise not_found(f"Secret {name!r} is missing keys {lacking}")
        elif name and creation == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            env = request.environment_name or "main"
            raise not_found(f"Secret '{name}' not found in environment '{env}'")
        else:
            secret = self.add_secret(name, dict(request.env_dict))
        return api_pb2.SecretGetOrCreateResponse(
            secret_id=secret.secret_id,
            metadata=api_pb2.SecretMetadata(name=secret.name, keys=sorted(secret.env)),
        )

    def secret_env(self, secret_ids: list[str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for secret_id in secret_ids:
            env.update(self.secrets[secret_id].env)
        return env
