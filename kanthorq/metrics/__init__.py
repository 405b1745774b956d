"""Prometheus metrics: the ``metrics`` extra (``pip install 'kanthorq[metrics]'``).

``kanthorq run app:app --metrics-port 9464`` serves them at ``/metrics``. In a process of
your own (a FastAPI app that runs the workers in its lifespan, say)::

    import kanthorq.metrics

    kanthorq.metrics.enable(app)                        # before app.run()
    api.mount("/metrics", kanthorq.metrics.asgi_app())  # ASGI (FastAPI, Starlette)
    web_app.router.add_get("/metrics", kanthorq.metrics.aiohttp_handler())  # aiohttp

The metrics go to prometheus-client's default registry unless ``registry=`` names
another. Their names are stable; the README's "Monitoring" section lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kanthorq.extras import needs

with needs("metrics"):
    import prometheus_client
    from prometheus_client import exposition

from kanthorq.metrics.hook import Metrics
from kanthorq.metrics.instruments import Instruments

if TYPE_CHECKING:
    from kanthorq.app import App

Registry = prometheus_client.CollectorRegistry


def enable(
    app: App, *, registry: Registry | None = None, refresh_interval: float = 15.0
) -> Metrics:
    """Count what ``app`` publishes and runs from now on (its hook, added once per
    registry). ``refresh_interval``: how often, at most, the lag and task gauges are read
    from the database (one read per stream), while the app's workers run."""
    chosen = prometheus_client.REGISTRY if registry is None else registry
    for hook in app.hooks:
        if isinstance(hook, Metrics) and hook.registry is chosen:
            return hook
    metrics = Metrics(app, registry=chosen, refresh_interval=refresh_interval)
    app.hooks.add(metrics)
    return metrics


def render(registry: Registry | None = None, accept: str = "") -> tuple[bytes, str]:
    """The exposition of ``registry`` (the default one) in the format ``accept`` asks
    for: ``(body, content type)``."""
    encode, content_type = exposition.choose_encoder(accept)
    return encode(prometheus_client.REGISTRY if registry is None else registry), content_type


def asgi_app(registry: Registry | None = None) -> Callable[..., Any]:
    """An ASGI app that serves ``registry`` (the default one): mount it at ``/metrics``."""
    return prometheus_client.make_asgi_app(
        prometheus_client.REGISTRY if registry is None else registry
    )


def aiohttp_handler(registry: Registry | None = None) -> Callable[[Any], Awaitable[Any]]:
    """An aiohttp request handler that serves ``registry`` (the default one)."""
    from aiohttp import web  # only for aiohttp users, who have it

    async def handler(request: web.Request) -> web.Response:
        body, content_type = render(registry, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


__all__ = ["Instruments", "Metrics", "aiohttp_handler", "asgi_app", "enable", "render"]
