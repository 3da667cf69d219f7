"""A TCP relay: what connects to one address is carried to another. The cut-off test runs a gateway in
a network namespace, where the test broker (on the host's loopback) is reached through two of these:
the namespace's loopback to the veth pair's host address, and that to the host's loopback.

    python relay.py LISTEN_HOST:PORT TARGET_HOST:PORT
"""

import socket
import sys
import threading


def _pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen, target, ready=None):
    """Relays every connection to `listen` (host, port) to `target` until the process ends."""
    server = socket.create_server(listen, reuse_port=False)
    if ready is not None:
        ready.set()
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def in_background(listen, target):
    """Starts a relay in a daemon thread, listening once this returns."""
    ready = threading.Event()
    threading.Thread(target=serve, args=(listen, target, ready), daemon=True).start()
    ready.wait(5)


def _address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


if __name__ == "__main__":
    print("relaying", flush=True)
    serve(_address(sys.argv[1]), _address(sys.argv[2]))
