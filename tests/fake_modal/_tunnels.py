"""``modal.forward(port)``: a TLS endpoint on 127.0.0.1 that relays to the container's port.

Modal's tunnel URL is ``https://host:port``; here the host is 127.0.0.1 and the certificate
is the server's own, self-signed (``FakeModal.tunnel_ssl_context()`` trusts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from grpclib import GRPCError, Status
from modal_proto import api_pb2

from fake_modal._service import Component, Context, Service

HOST = "127.0.0.1"


@dataclass
class Tunnel:
    task_id: str
    port: int
    """The container's port."""
    public_port: int
    server: asyncio.AbstractServer

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.public_port}"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-modal tunnel")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tunnel.crt", folder / "tunnel.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Tunnels(Component):
    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.tunnels: dict[tuple[str, int], Tunnel] = {}
        self._ssl: ssl.SSLContext | None = None
        self.certificate: Path | None = None

    def _server_ssl(self) -> ssl.SSLContext:
        if self._ssl is None:
            self.certificate, key = make_certificate(self.server.root / "tls")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certificate, key)
            self._ssl = context
        return self._ssl

    async def TunnelStart(
        self, request: api_pb2.TunnelStartRequest, context: Context
    ) -> api_pb2.TunnelStartResponse:
        if not context.from_container:
            raise GRPCError(Status.FAILED_PRECONDITION, "tunnels are for containers")
        key = (context.peer, request.port)
        if key in self.tunnels:
            raise GRPCError(Status.ALREADY_EXISTS, f"port {request.port} is already forwarded")
        target = request.port

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(HOST, target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_relay(reader, upstream_writer), _relay(upstream_reader, writer))

        server = await asyncio.start_server(connected, HOST, 0, ssl=self._server_ssl())
        port = server.sockets[0].getsockname()[1]
        self.tunnels[key] = Tunnel(context.peer, request.port, port, server)
        return api_pb2.TunnelStartResponse(host=HOST, port=port)

    async def TunnelStop(
        self, request: api_pb2.TunnelStopRequest, context: Context
    ) -> api_pb2.TunnelStopResponse:
        key = (context.peer, request.port)
        exists = key in self.tunnels
        await self.close(key)
        return api_pb2.TunnelStopResponse(exists=exists)

    async def close(self, key: tuple[str, int]) -> None:
        tunnel = self.tunnels.pop(key, None)
        if tunnel is not None:
            tunnel.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tunnel.server.wait_closed(), 2)

    async def close_for(self, task_id: str) -> None:
        """A container is gone: so are its tunnels."""
        for key in [key for key in self.tunnels if key[0] == task_id]:
            await self.close(key)

    async def shutdown(self) -> None:
        for key in list(self.tunnels):
            await self.close(key)

    def client_ssl(self) -> ssl.SSLContext:
        """An SSL context that trusts the tunnels' certificate."""
        self._server_ssl()
        return ssl.create_default_context(cafile=str(self.certificate))
