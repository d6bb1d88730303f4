"""A real FrontendApp over the embedded discovery store and in-process request-plane workers, for the tests that
drive the frontend's own code paths without processes: the setup and teardown they share."""

from __future__ import annotations

import msgspec

from dynamo.frontend.http_app import FrontendApp
from dynamo.frontend.model_manager import ModelManager
from dynamo.llm.model_card import ModelDeploymentCard, card_record
from dynamo.runtime import records
from dynamo.runtime.discovery import mem
from dynamo.runtime.discovery.mem import MemStore
from dynamo.runtime.records import EndpointId, InstanceRecord
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.scripted_worker import ScriptedWorker

EID = EndpointId("dynamo", "backend", "generate")


class InProcessFrontend:
    """The store (named `name`), request-plane client and model manager (cards switch at once), and the `workers`;
    a subclass builds `self.app` on them and registers its workers in `setup`. Entering starts them and runs
    `setup`, closing all of it if either fails; leaving closes all of it."""

    app: FrontendApp

    def __init__(self, name: str, workers: list) -> None:
        self.name, self.workers = name, workers
        self.store = MemStore(name=name)
        self.client = RequestPlaneClient()
        self.manager = ModelManager(self.store, "dynamo", card_settle=0)

    async def start(self) -> None:
        await self.store.start()
        for worker in self.workers:
            await worker.server.start()
        await self.manager.start()

    async def register(self, iid: int, worker: ScriptedWorker, card: ModelDeploymentCard) -> None:
        """Worker `iid` at `worker`'s address, serving `card`, as a worker registers itself."""
        await self.store.put(records.mdc_key(EID, iid), card_record(card, EID.namespace, EID.component,
                                                                    EID.endpoint, iid))
        record = InstanceRecord(namespace=EID.namespace, component=EID.component, endpoint=EID.endpoint,
                                instance_id=iid, transport={"tcp": worker.address})
        await self.store.put(records.instance_key(EID, iid), msgspec.json.encode(record))

    async def close(self) -> None:
        await self.app.close()
        await self.manager.stop()
        await self.client.close()
        for worker in self.workers:
            await worker.server.close(linger=0.1)
        await self.store.close()
        mem.reset(self.name)

    async def setup(self) -> None:
        """What a subclass does once started (registering its workers, waiting for them)."""

    async def __aenter__(self):
        try:
            await self.start()
            await self.setup()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
