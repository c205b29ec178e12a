"""The small services the labs run. Each is a module runnable with `python -m`, built
on `meshlab.apps.server`: stdlib HTTP/1.1 with Nagle disabled and a request journal the
checker can read directly (bypassing Envoy) to prove what reached the app."""
