"""`xbench server start`: an MLflow tracking server for a team, its runs on PostgreSQL, its artifacts served by it."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import typer

app = typer.Typer(help="A shared MLflow tracking server (PostgreSQL) for studies run by many processes or machines.")

DATABASE_SCHEMES = ("postgresql", "mysql", "mysql+pymysql", "mssql", "sqlite")


LOOPBACK = ("127.0.0.1", "localhost", "::1")
ADMIN_PASSWORD_VARIABLE = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own: the admin's password on first start
ADMIN_USER_VARIABLE = "XBENCH_SERVER_ADMIN"  # the admin's user name (default: admin)


def server_command(
    backend_store_uri: str, artifacts: Path, host: str, port: int, workers: int, auth: bool = False
) -> list[str]:
    """The `mlflow server` command line: runs in the database, artifacts uploaded to and served by the server
    (`--serve-artifacts`), so clients need nothing but the server's URL; with `auth`, MLflow's basic-auth app."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts.resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *(["--app-name", "basic-auth"] if auth else []),
    ]


def password_out_of_uri(uri: str) -> tuple[str, dict[str, str]]:
    """(the URI without its password, the environment that carries it instead): a password in argv is readable by
    every local user in `ps`. PostgreSQL clients (psycopg, so SQLAlchemy) read PGPASSWORD, or a passfile."""
    parsed = urlparse(uri)
    if not parsed.password:
        return uri, {}
    if not parsed.scheme.startswith("postgresql"):
        from xbench.core.errors import XbenchInputError

        raise XbenchInputError(
            "put the database password in the database's own configuration, not in the URI (it would show in ps)",
            field="--backend-store-uri",
        )
    # the URI carries the password percent-encoded (pa%40ss for pa@ss); PGPASSWORD takes it as it is
    return uri.replace(f":{parsed.password}@", "@", 1), {"PGPASSWORD": unquote(parsed.password)}


def auth_config(path: Path, auth_database: Path) -> dict[str, str]:
    """MLflow's basic-auth configuration, and the environment that points the server at it. Every file that holds a
    secret is the owner's alone (0600) from its creation: the configuration, the Flask secret and the auth database
    (the users' password hashes), which MLflow would otherwise create world-readable on its first start (an empty
    file is an empty SQLite database)."""
    user = os.environ.get(ADMIN_USER_VARIABLE, "admin")
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{auth_database.resolve()}\n"
        f"admin_username = {user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    descriptor = os.open(auth_database, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(descriptor)
    os.chmod(auth_database, 0o600)  # one made by an earlier version, or by MLflow, is made private too
    environment = {"MLFLOW_AUTH_CONFIG_PATH": str(path.resolve())}
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):  # the CSRF key: kept, so restarts keep sessions valid
        secret = path.with_name("mlflow-flask-secret")
        if not secret.is_file():
            import secrets

            descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
        environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secret.read_text().strip()
    return environment


@app.command("start")
def start_command(
    backend_store_uri: str = typer.Option(
        ...,
        "--backend-store-uri",
        help="Where runs live: postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the database must exist; MLflow "
        "creates its tables on first start).",
    ),
    artifacts: Path = typer.Option(
        Path("mlflow-artifacts"), "--artifacts", help="Directory (or mounted volume) where the server keeps artifacts."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 for other machines."),
    port: int = typer.Option(5000, "--port", help="Port the tracking server listens on."),
    workers: int = typer.Option(2, "--workers", help="Server worker processes."),
    auth: bool = typer.Option(
        False,
        "--auth",
        help=f"Ask who you are: MLflow's basic-auth app. The admin's password comes from ${ADMIN_PASSWORD_VARIABLE} "
        f"(its name from ${ADMIN_USER_VARIABLE}, default admin); clients set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD.",
    ),
    allow_anonymous: bool = typer.Option(
        False, "--allow-anonymous", help="Serve a non-loopback --host without --auth (anyone who reaches it can write)."
    ),
    print_only: bool = typer.Option(False, "--print", help="Print the mlflow command instead of running it."),
) -> None:
    """Run an MLflow tracking server for xbench on PostgreSQL: `xbench run ... --tracking-uri http://HOST:PORT` from
    any number of processes and machines then log to it, and its UI shows every run.

    The database password never goes on a command line: give it in PGPASSWORD or a PostgreSQL passfile (~/.pgpass);
    one written in the URI is moved to the server's environment.

    Example: MLFLOW_AUTH_ADMIN_PASSWORD=... PGPASSWORD=... xbench server start --auth --host 0.0.0.0
    --backend-store-uri postgresql://xbench@db:5432/xbench
    """
    from xbench.core.errors import XbenchInputError

    scheme = urlparse(backend_store_uri).scheme
    if scheme not in DATABASE_SCHEMES:
        raise XbenchInputError(
            f"must be a database URI ({', '.join(DATABASE_SCHEMES)}), got {backend_store_uri!r}",
            field="--backend-store-uri",
        )
    if scheme.startswith("postgresql"):
        from xbench.core.extras import require_extra

        require_extra("psycopg", field="--backend-store-uri")  # SQLAlchemy 2 talks to PostgreSQL through psycopg 3
    if host not in LOOPBACK and not auth:
        if not allow_anonymous:
            raise XbenchInputError(
                f"--host {host} serves other machines, and without --auth anyone who reaches the port can read and "
                "write every run: add --auth (and set MLFLOW_AUTH_ADMIN_PASSWORD), or --allow-anonymous on a network "
                "you trust",
                field="--host",
            )
        typer.echo(f"warning: serving {host} without authentication (--allow-anonymous)", err=True)
    uri, environment = password_out_of_uri(backend_store_uri)
    command = server_command(uri, artifacts, host, port, workers, auth)
    shown = shlex.join(command)
    if print_only:
        typer.echo(shown)
        return
    if auth:
        if not os.environ.get(ADMIN_PASSWORD_VARIABLE):
            raise XbenchInputError(
                f"--auth needs the admin's password in ${ADMIN_PASSWORD_VARIABLE} (MLflow creates the admin user with "
                "it on first start)",
                field="--auth",
            )
        artifacts.mkdir(parents=True, exist_ok=True)
        state = artifacts.resolve().parent
        environment |= auth_config(state / "mlflow-basic-auth.ini", state / "mlflow-auth.db")
    artifacts.mkdir(parents=True, exist_ok=True)
    os.environ.update(environment)
    typer.echo(f"MLflow tracking server on http://{host}:{port}: {shown}", err=True)
    os.execv(command[0], command)  # the server is this process from here on, so signals reach it directly
