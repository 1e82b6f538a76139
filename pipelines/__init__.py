"""Asynchronous pipelines: OpenAI's Batch API, async single requests and the workers that run
them, decoupled from the callers who submit the work.

    formats.py   the wire formats: batch input lines, output and error records, the File,
                 Batch and async job objects
    files.py     the files themselves, on S3 (boto3 in a thread; streamed multipart uploads)
    queue.py     the durable queue: Redis Streams with one consumer group, redelivery of what a
                 dead worker held (XAUTOCLAIM), acknowledgement and deletion
    state.py     the records in Redis and the batch state machine; a line's result is written,
                 counted and charged in one script, once, however often the line ran
    worker.py    the worker: prepares batches, runs lines and jobs through the gateway's own
                 stages (gateway/internal.py), finalizes, delivers webhooks
    limiter.py   the priority rule: batch concurrency that yields to online traffic
    webhooks.py  Standard Webhooks signatures (the scheme OpenAI's own webhooks use)
    api.py       the HTTP API on the gateway: /v1/files, /v1/batches, /v1/async
    rayjob.py    the RayJob manifest for datasets too large for the queue; raydata.py its job
    client.py    what `tandem batch submit` sends

It sits above the gateway (floor 2, its own level): it uses the gateway's keys, routes, budgets,
stages and metrics, and the gateway knows it only as an `Extension`.
"""
