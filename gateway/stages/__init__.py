"""The request path, one module per stage, in the order a request meets them:

    authenticate.py  who is calling: the API key, hashed and looked up
    parse.py         what they ask for: the body, checked, and the route its `model` names
    admit.py         whether they may, now: rate limits and team budgets, with their counters
    features.py      the caller's entity's features from the feature store, into the request
    cache.py         whether the response cache already has the answer
    forward.py       getting one from the backends: retries, fallbacks, hedging
    relay.py         sending it back (streams passed through as they arrive)
    account.py       what it cost: metrics, usage counters, the trace span

`gateway.app.GatewayService._serve` composes them; `call.py` is what one request carries from
stage to stage. The upstream connections and circuit breakers are gateway/proxy.py, the SSE
format gateway/sse.py.
"""
