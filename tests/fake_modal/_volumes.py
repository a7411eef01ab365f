"""``modal.Volume``: a committed folder per volume, and a view of it per container.

A container starts with a copy of what was committed; its writes stay in its view until it
commits (``VolumeCommit``: the files it changed since it last synced are copied back, last
write wins per file) and it sees others' commits only when it reloads (``VolumeReload``), as
on Modal. A container that dies loses what it did not commit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.empty_pb2 import Empty
from modal_proto import api_pb2

from fake_modal._service import Component, Context, Service, not_found

Snapshot = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)


@dataclass
class Volume:
    volume_id: str
    name: str
    path: Path
    """The committed contents."""
    commits: int = 0
    reloads: int = 0
    heartbeats: int = 0


@dataclass
class View:
    """One container's copy of a volume."""

    volume: Volume
    path: Path
    synced: Snapshot = field(default_factory=dict)


def _snapshot(root: Path) -> Snapshot:
    files: Snapshot = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            with_stat = path.lstat()
            files[str(path.relative_to(root))] = (with_stat.st_size, with_stat.st_mtime_ns)
    return files


def _copy_files(source: Path, target: Path, names: list[str]) -> None:
    for name in names:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, destination)


class Volumes(Component):
    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.volumes: dict[str, Volume] = {}
        self._named: dict[str, str] = {}
        self.views: dict[tuple[str, str], View] = {}  # (task id, volume id) -> view

    def get(self, volume_id: str) -> Volume:
        try:
            return self.volumes[volume_id]
        except KeyError:
            raise not_found(f"Volume {volume_id} not found") from None

    def by_name(self, name: str) -> Volume:
        return self.volumes[self._named[name]]

    def _create(self, name: str) -> Volume:
        volume_id = self.ids.new("vo")
        path = self.server.root / "volumes" / (name or volume_id)
        path.mkdir(parents=True, exist_ok=True)
        volume = Volume(volume_id, name, path)
        self.volumes[volume_id] = volume
        if name:
            self._named[name] = volume_id
        return volume

    def _response(self, volume: Volume) -> api_pb2.VolumeGetOrCreateResponse:
        return api_pb2.VolumeGetOrCreateResponse(
            volume_id=volume.volume_id,
            version=api_pb2.VOLUME_FS_VERSION_V2,
            metadata=api_pb2.VolumeMetadata(
                name=volume.name, version=api_pb2.VOLUME_FS_VERSION_V2
            ),
        )

    async def VolumeGetOrCreate(
        self, request: api_pb2.VolumeGetOrCreateRequest, context: Context
    ) -> api_pb2.VolumeGetOrCreateResponse:
        name = request.deployment_name
        if name and name in self._named:
            return self._response(self.volumes[self._named[name]])
        if name and request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
            raise not_found(f"Volume '{name}' not found")
        return self._response(self._create(name))

    async def VolumeGetById(
        self, request: api_pb2.VolumeGetByIdRequest, context: Context
    ) -> api_pb2.VolumeGetByIdResponse:
        volume = self.get(request.volume_id)
        return api_pb2.VolumeGetByIdResponse(
            volume_id=volume.volume_id,
            metadata=api_pb2.VolumeMetadata(
                name=volume.name, version=api_pb2.VOLUME_FS_VERSION_V2
            ),
        )

    async def VolumeHeartbeat(
        self, request: api_pb2.VolumeHeartbeatRequest, context: Context
    ) -> Empty:
        self.get(request.volume_id).heartbeats += 1
        return Empty()

    # -- containers' views ---------------------------------------------------------------------

    def mount(self, task_id: str, volume_id: str, path: Path) -> View:
        """A container's view, with what was committed so far."""
        volume = self.get(volume_id)
        view = View(volume, path)
        shutil.copytree(volume.path, path, dirs_exist_ok=True)
        view.synced = _snapshot(path)
        self.views[(task_id, volume_id)] = view
        return view

    def _view(self, context: Context, volume_id: str) -> View:
        view = self.views.get((context.peer, volume_id))
        if view is None:
            raise not_found(f"Volume {volume_id} is not mounted in {context.peer}")
        return view

    async def VolumeCommit(
        self, request: api_pb2.VolumeCommitRequest, context: Context
    ) -> api_pb2.VolumeCommitResponse:
        volume = self.get(request.volume_id)
        volume.commits += 1
        if not context.from_container:  # a commit from outside a container has nothing to add
            return api_pb2.VolumeCommitResponse(skip_reload=True)
        view = self._view(context, request.volume_id)
        now = _snapshot(view.path)
        changed = [name for name, stat in now.items() if view.synced.get(name) != stat]
        _copy_files(view.path, volume.path, changed)
        for name in set(view.synced) - set(now):  # deleted in the container
            (volume.path / name).unlink(missing_ok=True)
        view.synced = now
        return api_pb2.VolumeCommitResponse(skip_reload=False)

    async def VolumeReload(self, request: api_pb2.VolumeReloadRequest, context: Context) -> Empty:
        volume = self.get(request.volume_id)
        volume.reloads += 1
        if context.from_container:
            view = self._view(context, request.volume_id)
            shutil.copytree(volume.path, view.path, dirs_exist_ok=True)
            view.synced = _snapshot(view.path)
        return Empty()

    def unmount(self, task_id: str) -> None:
        for key in [key for key in self.views if key[0] == task_id]:
            del self.views[key]
