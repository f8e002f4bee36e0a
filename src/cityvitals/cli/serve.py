"""``cityvitals serve``: the HTTP API and the dashboard over the store, and with ``--mqtt``
live ingestion from a broker.

With the embedded store the server process owns the DuckDB file while it runs (DuckDB lets
one process open it), so other commands that need the store talk to the running server or
wait for it to stop. With ``--store postgresql://...`` other commands work alongside.

MQTT: version 5, QoS 1, a persistent session under ``--mqtt-client-id``, each message
acknowledged after the batch holding it is committed. The broker keeps at most
``--mqtt-max-pending`` messages in flight to us; what is beyond waits at the broker, so
size its queue for the backlog to ride out (Mosquitto: ``max_queued_messages``, 1000 per
client by default, beyond which it drops QoS 1 messages for a slow subscriber).
``--follow`` runs the watch (alerts) and signs (indicators), woken by each stored batch: in
a child process on a PostgreSQL store (``cityvitals.live.StagesProcess``, so the detectors do
not share the ingest's interpreter), as threads in this process on the embedded one
(``LiveStages``).
Status with the lag: ``GET /api/v1/ingest/status``; probes ``/livez``, ``/readyz``;
Prometheus text at ``/metrics`` (see ``cityvitals.api.routers.ingest_status``).
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Optional

import typer

from cityvitals.cli._common import Home, Store, err_console, open_store_cli


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.01, help="Largest request body accepted.")] = 4.0,
    mqtt: Annotated[Optional[str], typer.Option("--mqtt", help="Also ingest live readings from this broker, "
                                                "e.g. mqtt://127.0.0.1:1883 (QoS 1, acknowledged once stored).")] = None,
    mqtt_layout: Annotated[str, typer.Option("--mqtt-layout", help="Topic layout; {kind} and {sensor_id} levels "
                                             "match any value.")] = "cityvitals/readings/{kind}/{sensor_id}",
    mqtt_client_id: Annotated[str, typer.Option("--mqtt-client-id", help="Fixed client id of the persistent "
                                                "session (one per ingesting process).")] = "cityvitals-ingest",
    mqtt_share_group: Annotated[Optional[str], typer.Option("--mqtt-share-group", help="Split the stream with other "
                                                            "ingesting processes: each subscribes as a member of "
                                                            "this MQTT 5 shared subscription, with its own "
                                                            "--mqtt-client-id.")] = None,
    mqtt_batch: Annotated[int, typer.Option("--mqtt-batch", min=1, help="Most messages per stored batch.")] = 500,
    mqtt_max_pending: Annotated[int, typer.Option("--mqtt-max-pending", min=1, max=65535, help="Most messages "
                                                  "unacknowledged at once (the MQTT 5 receive maximum): bounds "
                                                  "memory; the broker holds the rest.")] = 2000,
    mqtt_stats: Annotated[Optional[str], typer.Option("--mqtt-stats", help="Write ingest counters and lag as JSON "
                                                      "to this file once subscribed and after every batch.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Run the watch (alerts) and signs (indicators) on new "
                                         "readings as soon as each batch is stored (in a child process with "
                                         "PostgreSQL), the watch's state kept in memory (checkpointed every 10 s "
                                         "and on exit).")] = False,
    no_http: Annotated[bool, typer.Option("--no-http", help="Ingest from --mqtt only; serve no API.")] = False,
    home: Home = None,
    store_url: Store = None,
) -> None:
    """Serve the API (/api/v1) and the live dashboard (/) until interrupted; with --mqtt, ingest live."""
    from cityvitals.errors import CityvitalsError, InputError
    from cityvitals.home import announce_server, withdraw_server

    if no_http and not mqtt:
        raise InputError("--no-http needs --mqtt (there would be nothing to serve)")
    store = open_store_cli(home, store_url)
    source = stages = None
    stop = threading.Event()
    before = {}
    if no_http:  # from here on a SIGTERM stops the server cleanly, even while it starts
        for sig in (signal.SIGINT, signal.SIGTERM):
            before[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        if follow:
            if store.backend == "postgresql":  # a process of its own, each stage on its own connection
                from cityvitals.live import StagesProcess

                try:
                    stages = StagesProcess(store.url).start()
                except RuntimeError as exc:  # says why: another server follows this store, or it failed
                    raise CityvitalsError(f"--follow: {exc}") from exc
                err_console.print(f"live stages: watch and signs in process {stages.pid}")
            else:  # the embedded file is this process's: threads beside the ingest, one connection
                from cityvitals.live import LiveStages

                stages = LiveStages(lambda: store).start()
        if mqtt:
            from cityvitals.ingest.mqtt import MqttConfig, MqttSource

            cfg = MqttConfig(url=mqtt, layout=mqtt_layout, client_id=mqtt_client_id, batch_messages=mqtt_batch,
                             max_pending=max(mqtt_max_pending, mqtt_batch), share_group=mqtt_share_group or "")
            cfg.host_port  # noqa: B018  (validates the URL)
            try:
                source = MqttSource(store, cfg, stats_path=mqtt_stats,
                                    on_batch=stages.notify if stages is not None else None).start()
            except OSError as exc:
                raise InputError(f"--mqtt {mqtt}: cannot connect to the broker: {exc}") from exc
            err_console.print(f"mqtt: {mqtt} topics {cfg.subscription} (client {mqtt_client_id})")
        if no_http:
            def stages_ok() -> bool:
                return stages is None or stages.alive()

            while not stop.is_set() and source.alive() and stages_ok():  # type: ignore[union-attr]
                stop.wait(0.5)
            if source.error:  # type: ignore[union-attr]
                raise source.error  # type: ignore[union-attr]
            if not stages_ok():  # exit non-zero: a supervisor restarts the server, and the stages with it
                raise RuntimeError("the live stages' process (watch and signs) stopped")
            return
        import uvicorn

        from cityvitals.api import Limits, create_app

        if not store.users.list():
            err_console.print("[yellow]no users yet: create one with `cityvitals users add NAME --role admin`[/yellow]")
        app = create_app(store, limits=Limits(max_body_bytes=int(max_body_mb * 1024 * 1024)))
        if source is not None:
            app.state.mqtt = source
        app.state.stages = stages
        err_console.print(f"dashboard: http://{host}:{port}/   API: http://{host}:{port}/api/v1/docs")
        if store.backend == "duckdb":  # other commands cannot open the file now: tell them who has it
            announce_server(home, f"http://{host}:{port}")
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        if source is not None:
            source.stop()
        if stages is not None:
            stages.close()
            for s in stages.stores():
                if s is not store:
                    s.close()
        if store.backend == "duckdb":
            withdraw_server(home)
        store.close()
        for sig, handler in before.items():  # a caller's own (a test calling the command in-process)
            signal.signal(sig, handler)
