"""Lab 01's app: answers every request with a greeting. It never sets
`x-my-injected-header`; if a client sees that header, something in between added it."""

from meshlab.apps.server import Request, Response, serve

GREETING = "Hello from the Python App!"


def hello(request: Request) -> Response:
    return Response(200, GREETING + "\n")


if __name__ == "__main__":
    serve(hello, description="Lab 01's app: answers every request with a greeting.")
