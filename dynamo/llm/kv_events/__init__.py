"""The KV-event contract between engine workers and routers (NVIDIA Dynamo's `dynamo.llm`
publishers): event and load-metric formats, block hashing, the worker-side publisher and
resync state, and the decoder for engines' native ZMQ events. Workers import only this
package; the router consumes what it defines."""
