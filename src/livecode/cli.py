"""`livecode serve | api | worker | db | dlq | user | config`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

from .config import ConfigError, load_settings

# Threads per API process when neither --threads nor LIVECODE_API_THREADS says: each SSE/WebSocket
# follower holds a thread (docs/streaming.md), so 128 lets about 96 follow under `livecode api`.
API_THREADS = 128
SERVE_THREADS = 64


def _settings(mode: str | None) -> Any:
    try:
        return load_settings(mode)
    except ConfigError as exc:
        sys.exit(f"livecode: {exc}")


def cmd_serve(args: argparse.Namespace) -> None:
    """Embedded: API + in-process broker and worker, SQLite. No servers needed."""
    from .app import create_app
    from .runtime import init_runtime
    from .sandbox import SandboxUnavailable
    from .web.server import front_limits, serve
    from .worker.embedded import InProcessWorker

    settings = _settings("embedded")
    host, port = args.host or settings.host, args.port or settings.port
    # Streams and waits leave a quarter of the threads for other requests (api/stream_slots.py).
    settings = settings.with_overrides(api_threads=args.threads or settings.api_threads or SERVE_THREADS)
    state: dict[str, Any] = {}

    def factory() -> Any:
        rt = init_runtime(settings)
        app = create_app(settings, runtime=rt)
        worker = InProcessWorker(rt)
        try:
            worker.start()
        except SandboxUnavailable as exc:
            sys.stderr.write(f"livecode: the sandbox is unavailable: {exc}\n")
            os._exit(3)
        state["worker"] = worker
        app.extensions["livecode.worker"] = worker
        return app

    def worker_exit(_server: Any, _worker: Any) -> None:
        if state.get("worker"):
            state["worker"].stop()

    auth = "single local user, no sign-in" if not settings.auth_required else "sign-in required"
    print(
        f"LiveCode (embedded): http://{host}:{port}/  docs: http://{host}:{port}/docs\n"
        f"  data: {settings.data_dir}  sandbox: {settings.sandbox}  accounts: {auth}",
        flush=True,
    )
    serve(factory, host=host, port=port, workers=1, threads=settings.api_threads,
          limits=front_limits(settings), worker_exit=worker_exit)


def _prometheus_multiprocess(path: str | None) -> Any:
    """/metrics must add up every gunicorn process: prometheus_client's multiprocess mode, set up
    before prometheus_client is first imported. prometheus_client reads its directory from the
    environment only, so the setting is handed to it there. Returns gunicorn's child_exit hook."""
    import glob
    import tempfile

    path = path or tempfile.mkdtemp(prefix="livecode-metrics-")
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):  # left by a previous run
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    return child_exit


def cmd_api(args: argparse.Namespace) -> None:
    """Distributed: the API under gunicorn; workers run separately."""
    settings = _settings("distributed")
    child_exit = _prometheus_multiprocess(settings.prometheus_multiproc_dir)  # before prometheus_client is imported
    from .app import create_app
    from .web.server import front_limits, serve

    settings = settings.with_overrides(api_threads=args.threads or settings.api_threads or API_THREADS)
    if args.migrate:
        from . import migrations as migrate
        from .db import Database

        db = Database(settings)
        migrate.upgrade(db.engine)
        db.dispose()
    serve(lambda: create_app(settings), host=args.host or settings.host, port=args.port or settings.port,
          workers=args.workers or settings.api_workers, threads=settings.api_threads, limits=front_limits(settings),
          child_exit=child_exit)


def cmd_worker(args: argparse.Namespace) -> None:
    from .sandbox import SandboxUnavailable
    from .worker.celery_app import celery, configure_celery
    from .worker.sandbox_runner import get_process_runner

    settings = _settings("distributed")
    from .logging_setup import configure_logging

    configure_logging(settings)  # JSON lines carrying each execution's request id
    configure_celery(settings)
    try:
        get_process_runner(settings)
    except SandboxUnavailable as exc:
        sys.exit(f"livecode worker: refusing to start: {exc}")
    queues = args.queues or f"{settings.queue_high},{settings.queue_low}"
    argv = ["worker", "--loglevel", args.loglevel, "-Q", queues, "--pool", "threads",
            "-c", str(args.concurrency or settings.worker_concurrency),
            "--without-gossip", "--without-mingle"]
    if args.name:
        argv += ["-n", args.name]
    import livecode.worker.lifecycle  # noqa: F401 - connects the worker signals

    from .worker.metrics import connect_worker_signals

    connect_worker_signals()

    celery.worker_main(argv)


def cmd_db(args: argparse.Namespace) -> None:
    from . import migrations as migrate
    from .db import Database

    settings = _settings(None)
    db = Database(settings)
    if args.action == "upgrade":
        migrate.upgrade(db.engine, args.revision or "head")
        print(f"database at {migrate.current(db.engine)}")
    elif args.action == "downgrade":
        migrate.downgrade(db.engine, args.revision or "-1")
        print(f"database at {migrate.current(db.engine)}")
    else:
        print(migrate.current(db.engine))


def cmd_dlq(args: argparse.Namespace) -> None:
    from .runtime import init_runtime
    from .services import dead_letters as deadletter
    from .worker.celery_app import configure_celery, enqueue_execution

    settings = _settings(None)
    rt = init_runtime(settings)
    configure_celery(settings)
    if args.action == "list":
        print(json.dumps(deadletter.list_dead_letters(rt, args.limit), indent=2))
        return
    if args.action == "purge":
        target = uuid.UUID(args.id) if args.id else None
        print(json.dumps({"purged": deadletter.purge_dead_letters(rt, target)}))
        return
    if not args.id:
        sys.exit(f"livecode dlq {args.action}: give the dead letter's id")
    dl_id = uuid.UUID(args.id)
    if args.action == "show":
        found = deadletter.get_dead_letter(rt, dl_id)
    else:
        from .errors import ApiError

        try:
            found = deadletter.requeue_dead_letter(rt, dl_id, enqueue_execution)
        except ApiError as exc:  # e.g. requeued already
            sys.exit(f"livecode dlq requeue: {exc.message}")
    if found is None:
        sys.exit(f"no dead letter {dl_id}")
    print(json.dumps(found, indent=2))


def cmd_user(args: argparse.Namespace) -> None:
    """Accounts from the command line, e.g. the first admin: `livecode user create alice --admin`.
    The password comes from LIVECODE_PASSWORD or is asked for (never a command-line argument)."""
    import getpass

    from . import migrations as migrate
    from .db import Database
    from .errors import ApiError
    from .services import accounts

    db = Database(_settings(None))
    if db.is_sqlite:
        migrate.upgrade(db.engine)  # the embedded database may not exist yet
    role = "admin" if args.admin else "user"
    try:
        if args.action == "create":
            password = os.environ.get("LIVECODE_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
            print(json.dumps(accounts.create_user(db, args.username, password, role,
                                                  min_password=db.settings.password_min_length)))
        elif args.action == "invite":  # the username argument is ignored: `livecode user invite -`
            print(json.dumps(accounts.create_invitation(db, None, days=args.days)))
        elif args.action == "delete":
            if not accounts.delete_user(db, args.username):
                sys.exit(f"no user {args.username!r}")
            print(json.dumps({"deleted": args.username}))
        elif not accounts.set_role(db, args.username, role):
            sys.exit(f"no user {args.username!r}")
        else:
            print(json.dumps({"username": args.username, "role": role}))
    except ApiError as exc:
        sys.exit(f"livecode user {args.action}: {exc.message}")


def cmd_config(args: argparse.Namespace) -> None:
    """`livecode config env-example > .env.example`: every setting, its default and its doc."""
    from .config import env_example

    sys.stdout.write(env_example())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livecode", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="embedded: API + worker in one process, no servers needed")
    # Defaults come from the settings (LIVECODE_HOST, LIVECODE_PORT, ...; see config.py).
    s.add_argument("--host", help="default: LIVECODE_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, help="default: LIVECODE_PORT or 5000")
    s.add_argument("--threads", type=int, help=f"default: LIVECODE_API_THREADS or {SERVE_THREADS}")
    s.set_defaults(func=cmd_serve)

    a = sub.add_parser("api", help="distributed: the API (needs DATABASE_URL, REDIS_URL)")
    a.add_argument("--host", help="default: LIVECODE_HOST or 127.0.0.1")
    a.add_argument("--port", type=int, help="default: LIVECODE_PORT or 5000")
    a.add_argument("--workers", type=int, help="default: LIVECODE_API_WORKERS or 2")
    a.add_argument("--threads", type=int, help=f"default: LIVECODE_API_THREADS or {API_THREADS}")
    a.add_argument("--migrate", action="store_true", help="apply migrations first")
    a.set_defaults(func=cmd_api)

    w = sub.add_parser("worker", help="distributed: a Celery worker")
    w.add_argument("-n", "--name", help="node name, e.g. worker1@%%h")
    w.add_argument("-Q", "--queues", help="comma-separated queues (default: high then low)")
    w.add_argument("-c", "--concurrency", type=int)
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("db", help="database migrations")
    d.add_argument("action", choices=["upgrade", "downgrade", "current"])
    d.add_argument("revision", nargs="?")
    d.set_defaults(func=cmd_db)

    q = sub.add_parser("dlq", help="dead-letter queue")
    q.add_argument("action", choices=["list", "show", "requeue", "purge"])
    q.add_argument("id", nargs="?")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(func=cmd_dlq)

    u = sub.add_parser("user", help="accounts: create (--admin for an operator), set-role, delete a user; "
                                    "invite: a one-time registration code")
    u.add_argument("action", choices=["create", "set-role", "delete", "invite"])
    u.add_argument("username", help="the account ('-' for invite)")
    u.add_argument("--admin", action="store_true", help="the admin role (operator endpoints)")
    u.add_argument("--days", type=int, default=7, help="invite: days the code stays valid")
    u.set_defaults(func=cmd_user)

    c = sub.add_parser("config", help="env-example: print .env.example, generated from the settings' declarations")
    c.add_argument("action", choices=["env-example"])
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
