"""moto's HTTP server, one request at a time: `python -m beatless.local.moto_server -p PORT`.

moto's own server handles requests in parallel threads without locking its
backends, so two conditional writes racing on one DynamoDB item can both
succeed — which DynamoDB never allows (a conditional write or a transaction is
atomic). Serving one request at a time restores that guarantee for every
service moto stands in for; the requests of a test or a local run are small.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

# An Amazon Linux 2023 image among those moto's EC2 serves by default: instances launch from
# it without a DescribeImages call (listing moto's 1,300 images takes seconds).
MOTO_IMAGE_ID = "ami-03c3da4cfa8e8943a"


class Serialized:
    """A WSGI middleware: the wrapped application serves one request at a time."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))  # the whole body inside the lock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m beatless.local.moto_server", description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds some URLs from it
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Serialized(app), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
