"""`active-stream` command line: the embedded broker, topic set-up, settings, and the services.

Expected failures (no cluster configured, broker missing, bad setting) print one line on stderr
and exit 2; only bugs produce a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.evaluation.cli import add_parser as add_label_efficiency
from services.streaming import logs
from services.streaming.embedded import BrokerUnavailable, EmbeddedBroker
from services.streaming.settings import (
    KafkaSettings,
    LabelSinkSettings,
    ScorerSettings,
    SettingsError,
    describe,
)
from services.streaming.topics import TopicResult, create_topics, loop_topics

# A scorer fenced by its own rejoin (SessionLost) rejoins in-process at most this many times
# within the window; more means something else is wrong, and it stops.
_MAX_REJOINS = 5
_REJOIN_WINDOW_S = 600.0

EXIT_USAGE = 2


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def _print_topics(results: Sequence[TopicResult]) -> None:
    for r in results:
        extra = f"  ({r.detail})" if r.detail else ""
        print(f"  {r.status:<8} {r.name}  partitions={r.partitions}{extra}")


def cmd_broker(args: argparse.Namespace) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM: the embedded Tansu broker, or with
    --apache-kafka a real Apache Kafka (KRaft, one node, jars from Maven Central)."""
    if args.apache_kafka:
        from services.streaming import apache_kafka

        if args.fetch_only:
            missing = apache_kafka.unavailable_reason()
            if missing is not None:
                raise CliError(missing)
            print(f"Apache Kafka {apache_kafka.kafka_version()} jars: "
                  f"{apache_kafka.fetch_jars()}", flush=True)
            return 0
        broker: EmbeddedBroker | apache_kafka.ApacheKafka = apache_kafka.ApacheKafka(args.port)
        what = f"Apache Kafka {apache_kafka.kafka_version()} (KRaft, one node"
    else:
        if args.fetch_only:
            raise CliError("--fetch-only goes with --apache-kafka")
        broker = EmbeddedBroker(args.port)
        what = "embedded Tansu broker (memory storage"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker.start()
        results = broker.create_topics(args.partitions)
        print(f"{what}, pid {broker.pid}); topics:")
        _print_topics(results)
        print(f"bootstrap: {broker.bootstrap}")
        print(f"  export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}   # Ctrl-C stops the broker",
              flush=True)
        while not stop.wait(0.5):
            if not broker.running():
                raise CliError(f"the broker exited on its own; log tail:\n{broker.log_tail()}")
    finally:
        if isinstance(broker, EmbeddedBroker):
            broker.stop()
        else:
            broker.close()
    print("broker stopped", flush=True)
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    """Create every loop topic on any Kafka cluster; idempotent."""
    env = dict(os.environ)
    if args.bootstrap:
        env["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap
    kafka = KafkaSettings.from_env(env)
    admin = AdminClient(kafka.client(role="admin"))
    try:
        results = create_topics(admin, loop_topics(args.partitions),
                                replication_factor=args.replication_factor)
    except KafkaException as exc:
        where = kafka.bootstrap_servers
        raise CliError(f"creating topics on {where} failed: {exc.args[0]}") from None
    print(f"topics on {kafka.bootstrap_servers}:")
    _print_topics(results)
    return 1 if any(r.status == "mismatch" for r in results) else 0


ACL_SERVICES = ("scorer", "label-sink", "label-studio", "ingest")


def _service_settings(service: str, environ: dict[str, str]) -> object:
    if service == "scorer":
        return ScorerSettings.from_env(environ)
    if service == "label-sink":
        return LabelSinkSettings.from_env(environ)
    if service == "label-studio":
        from services.label_studio.settings import BridgeSettings

        return BridgeSettings.from_env(environ)
    from services.ingest.settings import IngestSettings

    return IngestSettings.from_env(environ)


def cmd_acls(args: argparse.Namespace) -> int:
    """Print, create (--apply) or delete (--revoke) the ACLs a service needs, from the same
    settings (topic prefix, group, guarantee) the service itself reads."""
    from services.streaming import acls

    env = dict(os.environ)
    if not (args.apply or args.revoke):  # printing needs no cluster
        env.setdefault("KAFKA_BOOTSTRAP_SERVERS", "unused:9092")
    # What the service needs to run but its ACLs do not depend on.
    unused = {"ingest": ("ACTIVE_STREAM_INGEST_TOKEN",),
              "label-studio": ("ACTIVE_STREAM_LABEL_STUDIO_TOKEN",
                               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_SECRET")}
    for name in unused.get(args.service, ()):
        env.setdefault(name, "unused")
    if args.service == "label-studio":
        env.setdefault("ACTIVE_STREAM_LABEL_STUDIO_URL", "http://unused")
        env.setdefault("ACTIVE_STREAM_LABEL_STUDIO_PROJECT_ID", "1")
    build = {"scorer": acls.scorer_acls, "label-sink": acls.label_sink_acls,
             "label-studio": acls.bridge_acls, "ingest": acls.ingest_acls}[args.service]
    needed = sorted(build(_service_settings(args.service, env), args.principal))
    print(f"# {args.service}: {len(needed)} ACLs for {args.principal}")
    print(f"# {'principal':22s} {'op':8s} {'resource':16s} {'pattern':8s} name")
    for acl in needed:
        print(acl.line())
    if args.apply or args.revoke:
        kafka = KafkaSettings.from_env(env)
        admin = AdminClient(kafka.client(role="admin"))
        try:
            (acls.revoke if args.revoke else acls.apply)(admin, needed)
        except KafkaException as exc:
            raise CliError(f"{'deleting' if args.revoke else 'creating'} ACLs on "
                           f"{kafka.bootstrap_servers} failed: {exc.args[0]}") from None
        print(f"{'deleted' if args.revoke else 'created'} {len(needed)} ACLs on "
              f"{kafka.bootstrap_servers}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings of a service, secrets masked."""
    cls = ScorerSettings if args.service == "scorer" else LabelSinkSettings
    print(json.dumps(describe(cls.from_env(os.environ)), indent=2, default=str))
    return 0


def cmd_scorer(args: argparse.Namespace) -> int:
    """Run one scorer instance in the foreground; SIGINT/SIGTERM finish the batch, checkpoint,
    commit and leave the group."""
    settings = ScorerSettings.from_env(os.environ)
    _configure_logging()
    from services.scorer.partition import DeferredPickUnreadable
    from services.scorer.service import (
        DeliveryFailed,
        InstanceReplaced,
        Scorer,
        ScorerUnavailable,
        SessionLost,
    )
    from services.streaming.ceiling import DeadLetterCeilingExceeded

    rejoins: list[float] = []  # when each self-fence happened (monotonic clock)
    stopping = threading.Event()  # a stop signal, kept across a rejoin
    current: list[Scorer] = []

    def on_signal(*_: object) -> None:
        stopping.set()
        for running in current:
            running.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    while not stopping.is_set():
        try:
            scorer = Scorer(settings)
        except ScorerUnavailable as exc:
            raise CliError(str(exc)) from None
        current[:] = [scorer]
        if stopping.is_set():  # the signal came while it was being built
            scorer.stop()
        try:
            return scorer.run()
        except SessionLost as exc:
            # A broker restart longer than the session: a new consumer rejoins and restores,
            # in-process, as a restart would. Past a few in a row something else is wrong.
            now = time.monotonic()
            rejoins = [t for t in rejoins if now - t < _REJOIN_WINDOW_S] + [now]
            if len(rejoins) > _MAX_REJOINS:
                raise CliError(f"scorer stopped: {exc}, {len(rejoins)} times in "
                               f"{_REJOIN_WINDOW_S:.0f} s") from None
            logging.getLogger("services.scorer").warning("%s: rejoining with a new consumer",
                                                         exc)
        except (DeadLetterCeilingExceeded, DeliveryFailed, DeferredPickUnreadable,
                InstanceReplaced) as exc:
            raise CliError(f"scorer stopped: {exc}") from None
    return 0  # stopped by a signal between a self-fence and the rejoin


def cmd_label_sink(args: argparse.Namespace) -> int:
    """Run the label sink (faust) in the foreground until SIGINT/SIGTERM."""
    settings = LabelSinkSettings.from_env(os.environ)
    _configure_logging()
    from services.label_sink.cluster import SinkUnavailable  # faust is slow to import
    from services.label_sink.worker import run

    try:
        return run(settings)
    except SinkUnavailable as exc:
        raise CliError(str(exc)) from None


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run the HTTP ingest API in the foreground until SIGINT/SIGTERM (docs/ingest.md)."""
    from services.ingest.app import IngestUnavailable, run
    from services.ingest.settings import IngestSettings

    settings = IngestSettings.from_env(os.environ)
    if args.print_config:
        print(json.dumps(describe(settings), indent=2, default=str))
        return 0
    _configure_logging()
    try:
        return run(settings)
    except IngestUnavailable as exc:
        raise CliError(str(exc)) from None


def cmd_label_studio(args: argparse.Namespace) -> int:
    """Run the Label Studio bridge in the foreground until SIGINT/SIGTERM
    (docs/label-studio.md)."""
    from services.label_studio.settings import BridgeSettings

    settings = BridgeSettings.from_env(os.environ)
    if args.print_config:
        print(json.dumps(describe(settings), indent=2, default=str))
        return 0
    _configure_logging()
    from services.label_studio.bridge import Bridge, BridgeUnavailable

    bridge = Bridge(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: bridge.stop())
    try:
        return bridge.run()
    except BridgeUnavailable as exc:
        raise CliError(f"label-studio bridge stopped: {exc}") from None


def _configure_logging() -> None:
    logs.configure(os.environ)


DEMO_TIERS = {"consensus_k": 2}
"""The demo's tier policy: docs/tiers.md's defaults, named (an empty object turns tiers off)."""
DEMO_POLICY = {"budget": {"exploration_share": 0.3}, "exploration_rate": 0.0}
"""The demo's selector overrides: the explore lane, 30% of the budget instead of 10%, all to the
random control arm (no exploration picks), so that each model version's control-arm estimate
rests on a few labels rather than one (docs/mastery.md, "In the demo"; the in-process bench on
5 digits seeds: final accuracy 0.930 vs 0.934 with the defaults)."""


def cmd_demo(args: argparse.Namespace) -> int:
    """The closed loop on the embedded broker: active-stream through the real scorer and label
    sink vs a random baseline with the same labels; prints progress, a table, writes a plot.
    `--scenario video`: the video benchmark's clips (one seed), active-stream with its video
    signals through the services vs uncertainty-only and random in process."""
    from services.evaluation.cli import main as label_efficiency

    video = args.scenario == "video"
    if video and args.label_studio:
        raise CliError("--scenario video has no Label Studio annotator; drop --label-studio")
    if video and args.dataset != "digits":
        raise CliError("--scenario video builds its clips from digits; drop --dataset")
    argv = ["--mode", "kafka", "--seeds", "1", "--label-delay", str(args.label_delay),
            "--random-state", str(args.seed), "--out", args.out]
    if video:
        argv += ["--scenario", "video", "--strategies", "active-stream,uncertainty-only,random"]
        for name in ("clips", "frames"):
            if getattr(args, name) is not None:
                argv += [f"--{name}", str(getattr(args, name))]
        print("active-stream demo, video: clips of moving digits (near-duplicate frames, tracks "
              "whose ids swap when objects meet) stream as inference events; the scorer skips "
              "near duplicates and ranks unstable tracks, an oracle labels what it requests, "
              "the label sink triggers retraining, the trainer retrains.\n"
              "Uncertainty-only and random selection are run on the same clips for comparison.",
              file=sys.stderr, flush=True)
    else:
        argv += ["--dataset", args.dataset, "--strategies", "active-stream,random",
                 "--policy-json", json.dumps(DEMO_POLICY)]
        print("active-stream demo: a model streams predictions, the scorer picks what to label, "
              "an oracle labels it, the label sink triggers retraining, the trainer retrains.\n"
              "The same labels picked at random train a baseline model for comparison.\n"
              "30% of the budget goes to the random control arm (its labels estimate each "
              "model's accuracy on the stream, plotted as points with intervals); requests are "
              "routed to review / annotate / consensus tiers, whose spend is shown after each "
              "retraining, with each class's mastery state (docs/mastery.md).",
              file=sys.stderr, flush=True)
    if args.label_studio:
        argv.append("--label-studio")
    elif not video:  # the oracle answers each tier (k labels for consensus); Label Studio has none
        argv += ["--tiers", json.dumps(DEMO_TIERS)]
    code = label_efficiency(argv)
    if code == 0:
        plot = "video-label-efficiency.png" if video else "label-efficiency.png"
        print(f"plot: {os.path.join(args.out, plot)}", flush=True)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="active-stream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="run a broker for development: the embedded one, or "
                                           "Apache Kafka with --apache-kafka")
    broker.add_argument("--apache-kafka", action="store_true",
                        help="Apache Kafka (KRaft, one node; needs a JDK and Maven, fetches its "
                             "jars from Maven Central once) instead of the embedded broker")
    broker.add_argument("--fetch-only", action="store_true",
                        help="with --apache-kafka: fetch the jars and exit")
    broker.add_argument("--port", type=int, default=None,
                        help="loopback port for clients (default: a free one)")
    broker.add_argument("--partitions", type=int, default=4, help="partitions of the data topics")
    broker.set_defaults(func=cmd_broker)

    topics = sub.add_parser("topics", help="manage the loop's topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_sub.add_parser("create", help="create every topic (idempotent)")
    create.add_argument("--bootstrap", help="host:port (default: $KAFKA_BOOTSTRAP_SERVERS)")
    create.add_argument("--partitions", type=int, default=4, help="partitions of the data topics")
    create.add_argument("--replication-factor", type=int, default=1)
    create.set_defaults(func=cmd_topics_create)

    config = sub.add_parser("config", help="print a service's effective settings (secrets masked)")
    config.add_argument("service", choices=["scorer", "label-sink"])
    config.set_defaults(func=cmd_config)

    acl = sub.add_parser("acls", help="the Kafka ACLs a service needs: print, --apply, --revoke")
    acl.add_argument("service", choices=ACL_SERVICES)
    acl.add_argument("--principal", required=True, help="e.g. User:active-stream-scorer")
    action = acl.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true",
                        help="create them on KAFKA_BOOTSTRAP_SERVERS (as the admin the "
                             "ACTIVE_STREAM_KAFKA_* settings name)")
    action.add_argument("--revoke", action="store_true", help="delete exactly them")
    acl.set_defaults(func=cmd_acls)

    scorer = sub.add_parser("scorer", help="run a scorer instance (events -> annotation requests)")
    scorer.set_defaults(func=cmd_scorer)

    sink = sub.add_parser("label-sink", help="run the label sink (labels -> retrain triggers)")
    sink.set_defaults(func=cmd_label_sink)

    bench = sub.add_parser("bench", help="measurements (label efficiency)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    add_label_efficiency(bench_sub)

    ingest = sub.add_parser("ingest", help="run the HTTP ingest API (inference events over HTTP "
                                           "-> al.inference-events.v1)")
    ingest.add_argument("--print-config", action="store_true",
                        help="print the effective settings (token masked) and exit")
    ingest.set_defaults(func=cmd_ingest)

    studio = sub.add_parser("label-studio", help="run the Label Studio bridge (requests -> "
                                                 "tasks, annotations -> labels)")
    studio.add_argument("--print-config", action="store_true",
                        help="print the effective settings (secrets masked) and exit")
    studio.set_defaults(func=cmd_label_studio)

    demo = sub.add_parser("demo", help="the closed-loop demo on the embedded broker")
    demo.add_argument("--scenario", choices=("classification", "video"),
                      default="classification",
                      help="video: clips of moving digits with tracks and id swaps, the video "
                           "signals on (docs/video.md)")
    # --scenario video: a smaller stream (tests); defaults are the benchmark's.
    demo.add_argument("--clips", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--frames", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--dataset", default="digits", help="digits | segments | PATH.npz")
    demo.add_argument("--label-delay", type=float, default=0.2,
                      help="seconds the oracle annotator takes to answer (default 0.2)")
    demo.add_argument("--seed", type=int, default=0, help="which seed (split and stream order)")
    demo.add_argument("--out", default="demo-output", help="results.json and the plot go here")
    demo.add_argument("--label-studio", action="store_true",
                      help="the annotator works through a local Label Studio (installed once "
                           "into ~/.cache/active-stream): prints the project's URL, to watch or "
                           "to label by hand with a longer --label-delay")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, SettingsError, BrokerUnavailable) as exc:
        print(f"active-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
