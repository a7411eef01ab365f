"""A fake Modal server that speaks Modal's gRPC API to modal's own, unmodified client.

``app.run()``, ``Function.map``/``spawn``, ``modal.Queue``, ``modal.Volume``, ``modal.Secret``,
``modal.forward`` and ``modal.Retries`` run as modal's own code against it; the functions run
in containers that are processes on this machine, started from modal's own container
entrypoint. Faults (preemption, crashes, timeouts, failing builds, RPC errors) are injected
where Modal would produce them, and every request is recorded::

    with fake_modal.serving(monkeypatch) as server:  # MODAL_SERVER_URL etc. set
        sweeper.run(objective, backend="modal", n_trials=4)
        assert not server.invalid
"""

from fake_modal._faults import Fault, Faults
from fake_modal._functions import InputView, ObjectRef, Running, decode
from fake_modal._rpc import CLIENT, Rpc, summary
from fake_modal._server import FakeModal, serving

__all__ = [
    "CLIENT",
    "FakeModal",
    "Fault",
    "Faults",
    "InputView",
    "ObjectRef",
    "Rpc",
    "Running",
    "decode",
    "serving",
    "summary",
]
